//! `wasmtime-runtime`: the guest behind `WasmSandbox` with `engine: "wasmtime"`. It runs modules
//! that the host compiled ahead of time with Cranelift (`compiler/`, the same wasmtime version and
//! `engine_config.rs`) on `no_std` wasmtime, and speaks the same request protocol as the wasmi
//! guest (`guest/wasm-runtime`, docs/wasm.md "Wire encodings"), with one difference: `load` gets
//! no module bytes; the compiled artifact is already mapped into the VM by the host, read-only and
//! executable (docs/design.md, "Code publishing"), and the request says where.
//!
//! W^X: the guest never writes code and never changes page tables. wasmtime's "publish as
//! executable" hook only checks that the text lies inside the host-mapped code region; the page
//! tables there are already user, read-only, executable, and everything else is non-executable.
#![no_std]
#![no_main]

extern crate alloc;

mod codec;
mod engine_config;
mod platform;
mod wasi_wasmtime;
// The guest ABI's WASI host calls, shared with the wasmi guest.
#[path = "../../wasm-runtime/src/wasi_host.rs"]
mod wasi_host;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use hl_guest::{GuestError, HostError, Value, call_host};
use spinning_top::Spinlock;
use wasmtime::{
    Config, Engine, Error, ExternType, Func, Instance, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, Val, ValType,
};

use codec::{Reader, Writer, read_vals, text, write_vals};

hl_guest::guest_functions![
    load,
    instantiate,
    invoke,
    call_bytes,
    write_alloc,
    read_memory,
    write_memory,
    memory_size,
    fuel_consumed,
    probe_wx,
];

/// ERROR codes, shared with the other Wasm runtime guest.
use hl_wasm_abi::{code, trap};

/// Bytes of Wasm stack per frame that `maxRecursionDepth` is converted with: wasmtime limits the
/// Wasm stack in bytes (`max_wasm_stack`), not in frames.
const STACK_BYTES_PER_FRAME: usize = 128;
/// The smallest Wasm stack limit `maxRecursionDepth` can give.
const MIN_WASM_STACK: usize = 16 * 1024;

/// The data of the wasmtime store.
pub struct HostState {
    limits: StoreLimits,
    /// WASI state (`hl-wasi`); `None` without WASI.
    wasi: Option<hl_wasi::WasiCtx>,
}

struct Loaded {
    engine: Engine,
    module: Module,
    fuel: Option<u64>,
}

struct Running {
    store: Store<HostState>,
    instance: Instance,
}

struct State {
    loaded: Option<Loaded>,
    running: Option<Running>,
}

static STATE: Spinlock<State> = Spinlock::new(State {
    loaded: None,
    running: None,
});

/// A host function's failure, carried through wasmtime as the error of the import.
#[derive(Debug)]
struct HostFnError(String);

impl fmt::Display for HostFnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for HostFnError {}

/// WASI `proc_exit`: ends the running call with this status.
#[derive(Debug)]
pub struct ExitStatus(pub i32);

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl core::error::Error for ExitStatus {}

fn state_error(message: &str) -> GuestError {
    GuestError::new(code::STATE, message)
}

/// The engine: the compiler's settings (`engine_config.rs`), with the platform hooks of this
/// guest, and the Wasm stack limit from `max_recursion_depth`.
fn engine(fuel: bool, depth: u32, code: platform::CodeRegion) -> Result<Engine, GuestError> {
    let mut cfg = Config::new();
    engine_config::configure(&mut cfg, fuel);
    if depth != 0 {
        let bytes = (depth as usize)
            .saturating_mul(STACK_BYTES_PER_FRAME)
            .clamp(MIN_WASM_STACK, engine_config::MAX_WASM_STACK);
        cfg.max_wasm_stack(bytes);
    }
    cfg.with_custom_code_memory(Some(Arc::new(code)));
    // SAFETY: `detect` answers from this vCPU's CPUID, and only "yes" for features whose state the
    // VM enables (SSE; never AVX, whose XSAVE state is off).
    unsafe {
        cfg.detect_host_feature(platform::detect);
    }
    Engine::new(&cfg).map_err(|e| state_error(&format!("engine: {e}")))
}

/// `load(module, config)`: loads the host-mapped artifact and describes the module.
///
/// `module` must be empty (the code is mapped, not sent). Config: u64 fuel (0: off), u32 max
/// recursion depth (0: default), u64 address and u64 length of the mapped artifact.
fn load(module: Vec<u8>, config: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let parse = |config: &[u8]| -> Result<(u64, u32, u64, u64), String> {
        let mut r = Reader::new(config);
        let v = (
            r.u64().map_err(text)?,
            r.u32().map_err(text)?,
            r.u64().map_err(text)?,
            r.u64().map_err(text)?,
        );
        r.finish().map_err(text)?;
        Ok(v)
    };
    let (fuel, depth, addr, len) = parse(&config).map_err(|e| state_error(&e))?;
    if !module.is_empty() {
        return Err(state_error(
            "this guest runs mapped artifacts; send no bytes",
        ));
    }
    let region = platform::CodeRegion::new(addr, len).map_err(|e| state_error(&e))?;
    let engine = engine(fuel != 0, depth, region)?;
    // SAFETY: the region is the host's read-only mapping of an artifact the host compiled with
    // the same wasmtime and settings (and checked before mapping); it stays mapped, unchanged,
    // for the VM's lifetime, so it outlives the module. wasmtime validates the header (version,
    // settings, CPU features) and refuses anything else with an error.
    let compiled = unsafe { Module::deserialize_raw(&engine, region.as_slice()) }
        .map_err(|e| GuestError::new(code::ARTIFACT, format!("{e:#}")))?;
    let mut w = Writer::default();
    w.u32(compiled.imports().len() as u32);
    for import in compiled.imports() {
        w.str(import.module());
        w.str(import.name());
        codec::extern_type(&mut w, &import.ty()).map_err(|e| GuestError::new(code::MODULE, e))?;
    }
    w.u32(compiled.exports().len() as u32);
    for export in compiled.exports() {
        w.str(export.name());
        codec::extern_type(&mut w, &export.ty()).map_err(|e| GuestError::new(code::MODULE, e))?;
    }
    let mut state = STATE.lock();
    state.running = None;
    state.loaded = Some(Loaded {
        engine,
        module: compiled,
        fuel: (fuel != 0).then_some(fuel),
    });
    Ok(w.0)
}

/// `instantiate(config)`: links the imports and instantiates (running the start function). The
/// config is the wasmi guest's (docs/wasm.md).
fn instantiate(config: Vec<u8>) -> Result<(), GuestError> {
    let req =
        hl_wasi::InstantiateRequest::parse(&config).map_err(|e| state_error(&e.to_string()))?;
    let mut state = STATE.lock();
    state.running = None;
    let Some(loaded) = state.loaded.as_ref() else {
        return Err(state_error("no module loaded"));
    };
    let wasi_on = req.wasi.is_some();
    let mut linker = Linker::<HostState>::new(&loaded.engine);
    let mut defined = BTreeSet::new();
    for (index, import) in loaded.module.imports().enumerate() {
        let (module, name) = (import.module(), import.name());
        let ExternType::Func(ty) = import.ty() else {
            return Err(GuestError::new(
                code::LINK,
                format!("import {module}.{name}: only function imports are supported"),
            ));
        };
        if !defined.insert((String::from(module), String::from(name))) {
            continue;
        }
        if wasi_on && module == "wasi_snapshot_preview1" {
            wasi_wasmtime::define(&mut linker, name, ty)
                .map_err(|e| GuestError::new(code::LINK, e))?;
            continue;
        }
        let results: Vec<ValType> = ty.results().collect();
        let index = index as u32;
        linker
            .func_new(module, name, ty, move |_caller, params, out| {
                host_import(index, &results, params, out)
            })
            .map_err(|e| GuestError::new(code::LINK, e.to_string()))?;
    }
    let mut limits = StoreLimitsBuilder::new()
        .instances(1)
        .tables(16)
        .memories(16);
    if req.max_memory != 0 {
        limits = limits.memory_size(usize::try_from(req.max_memory).unwrap_or(usize::MAX));
    }
    if req.max_table != 0 {
        limits = limits.table_elements(usize::try_from(req.max_table).unwrap_or(usize::MAX));
    }
    let mut store = Store::new(
        &loaded.engine,
        HostState {
            limits: limits.build(),
            wasi: req.wasi,
        },
    );
    store.limiter(|s| &mut s.limits);
    if let Some(fuel) = loaded.fuel {
        store
            .set_fuel(fuel)
            .map_err(|e| state_error(&e.to_string()))?;
    }
    let instance = linker
        .instantiate(&mut store, &loaded.module)
        .map_err(|e| run_error(e, code::LINK))?;
    state.running = Some(Running { store, instance });
    Ok(())
}

/// A call from the module to an imported (host) function: `wasm_import(index, args)`.
fn host_import(
    index: u32,
    results: &[ValType],
    params: &[Val],
    out: &mut [Val],
) -> wasmtime::Result<()> {
    let args = write_vals(params).map_err(|e| Error::new(HostFnError(e)))?;
    match call_host("wasm_import", &[Value::U32(index), Value::Bytes(args)]) {
        Ok(Value::Bytes(bytes)) => {
            let vals = read_vals(&bytes, results)
                .map_err(|e| Error::new(HostFnError(format!("bad host result: {e}"))))?;
            for (slot, v) in out.iter_mut().zip(vals) {
                *slot = v;
            }
            Ok(())
        }
        Ok(other) => Err(Error::new(HostFnError(format!(
            "wasm_import returned {} instead of bytes",
            other.value_type()
        )))),
        Err(HostError::Failed(message)) => Err(Error::new(HostFnError(message))),
        Err(e) => Err(Error::new(HostFnError(e.to_string()))),
    }
}

/// The index of a trap kind (ERROR code `TRAP_BASE + index`), as the wasmi guest numbers them.
fn trap_index(trap: Trap) -> u32 {
    match trap {
        Trap::UnreachableCodeReached => trap::UNREACHABLE,
        Trap::MemoryOutOfBounds => trap::MEMORY_OUT_OF_BOUNDS,
        Trap::TableOutOfBounds => trap::TABLE_OUT_OF_BOUNDS,
        Trap::IndirectCallToNull => trap::INDIRECT_CALL_TO_NULL,
        Trap::IntegerDivisionByZero => trap::INTEGER_DIVIDE_BY_ZERO,
        Trap::IntegerOverflow => trap::INTEGER_OVERFLOW,
        Trap::BadConversionToInteger => trap::INVALID_CONVERSION_TO_INTEGER,
        Trap::StackOverflow => trap::STACK_OVERFLOW,
        Trap::BadSignature => trap::INDIRECT_CALL_TYPE_MISMATCH,
        Trap::OutOfFuel => trap::OUT_OF_FUEL,
        Trap::AllocationTooLarge => trap::OUT_OF_MEMORY,
        _ => trap::OTHER,
    }
}

/// Maps an error of a running module: exit, trap, host failure; anything else gets `other`.
fn run_error(e: Error, other: u32) -> GuestError {
    if let Some(ExitStatus(status)) = e.downcast_ref::<ExitStatus>() {
        return GuestError::new(code::EXIT, status.to_string());
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return GuestError::new(code::TRAP_BASE + trap_index(*trap), trap.to_string());
    }
    if let Some(host) = e.downcast_ref::<HostFnError>() {
        return GuestError::new(code::TRAP_BASE + trap::HOST, host.0.clone());
    }
    let message = format!("{e:#}");
    if other == code::LINK {
        return GuestError::new(code::LINK, message);
    }
    GuestError::new(code::TRAP_BASE + trap::OTHER, message)
}

fn running(state: &mut State) -> Result<&mut Running, GuestError> {
    state
        .running
        .as_mut()
        .ok_or_else(|| state_error("no module instantiated"))
}

fn refuel(state: &mut State) -> Result<(), GuestError> {
    let fuel = state.loaded.as_ref().and_then(|l| l.fuel);
    if let (Some(fuel), Some(run)) = (fuel, state.running.as_mut()) {
        run.store
            .set_fuel(fuel)
            .map_err(|e| state_error(&e.to_string()))?;
    }
    Ok(())
}

fn export_func(run: &mut Running, name: &str) -> Result<Func, GuestError> {
    run.instance
        .get_func(&mut run.store, name)
        .ok_or_else(|| GuestError::new(code::NO_EXPORT, format!("no exported function \"{name}\"")))
}

fn result_slots(types: impl Iterator<Item = ValType>) -> Result<Vec<Val>, GuestError> {
    types
        .map(|t| {
            Val::default_for_ty(&t).ok_or_else(|| {
                GuestError::new(code::BAD_ARGS, "reference and vector values cannot cross")
            })
        })
        .collect()
}

/// At the end of every export that ran Wasm code: gives stdin's unread read-ahead back to the
/// host (`hl_wasi::WasiCtx::end_call`; one exit, only when some is left), so no input waits in
/// the guest between calls, where a snapshot or a restore's rewind could find it.
fn after_call<T>(result: T) -> T {
    if let Some(run) = STATE.lock().running.as_mut()
        && let Some(wasi) = run.store.data_mut().wasi.as_mut()
    {
        wasi.end_call(&mut wasi_host::HlHost);
    }
    result
}

/// `invoke(name, args)`: calls an exported function with packed arguments.
fn invoke(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    after_call(invoke_module(name, args))
}

fn invoke_module(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = STATE.lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    let func = export_func(run, &name)?;
    let ty = func.ty(&run.store);
    let param_types: Vec<ValType> = ty.params().collect();
    let params = read_vals(&args, &param_types).map_err(|e| GuestError::new(code::BAD_ARGS, e))?;
    let mut results = result_slots(ty.results())?;
    func.call(&mut run.store, &params, &mut results)
        .map_err(|e| run_error(e, 0))?;
    write_vals(&results).map_err(|e| GuestError::new(code::BAD_ARGS, e))
}

fn memory(run: &mut Running) -> Result<Memory, GuestError> {
    run.instance
        .get_memory(&mut run.store, "memory")
        .ok_or_else(|| {
            GuestError::new(
                code::MEMORY,
                "the module exports no memory named \"memory\"",
            )
        })
}

fn mem_range(
    len_of_memory: usize,
    ptr: u64,
    len: u64,
) -> Result<core::ops::Range<usize>, GuestError> {
    let end = ptr.checked_add(len).filter(|&e| e <= len_of_memory as u64);
    match end {
        Some(end) => Ok(ptr as usize..end as usize),
        None => Err(GuestError::new(
            code::MEMORY,
            format!("{len} bytes at {ptr} are outside the memory ({len_of_memory} bytes)"),
        )),
    }
}

fn alloc_and_write(run: &mut Running, data: &[u8]) -> Result<u32, GuestError> {
    let alloc = export_func(run, "alloc")?;
    let mut out = [Val::I32(0)];
    alloc
        .call(&mut run.store, &[Val::I32(data.len() as i32)], &mut out)
        .map_err(|e| run_error(e, 0))?;
    let ptr = out[0]
        .i32()
        .ok_or_else(|| GuestError::new(code::BAD_ARGS, "alloc must have type (i32) -> i32"))?
        as u32;
    let mem = memory(run)?;
    let bytes = mem.data_mut(&mut run.store);
    let range = mem_range(bytes.len(), u64::from(ptr), data.len() as u64)?;
    bytes[range].copy_from_slice(data);
    Ok(ptr)
}

/// `call_bytes(name, input)`: the bytes convention (docs/wasm.md).
fn call_bytes(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    after_call(call_bytes_module(name, input))
}

fn call_bytes_module(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = STATE.lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    let func = export_func(run, &name)?;
    let ty = func.ty(&run.store);
    let params: Vec<ValType> = ty.params().collect();
    if !(params.len() == 2 && params.iter().all(|t| matches!(t, ValType::I32))) {
        return Err(GuestError::new(
            code::BAD_ARGS,
            format!("{name} must take (i32 ptr, i32 len) for the bytes convention"),
        ));
    }
    let ptr = alloc_and_write(run, &input)?;
    let mut results = result_slots(ty.results())?;
    func.call(
        &mut run.store,
        &[Val::I32(ptr as i32), Val::I32(input.len() as i32)],
        &mut results,
    )
    .map_err(|e| run_error(e, 0))?;
    let (out_ptr, out_len) = match results[..] {
        [Val::I32(p), Val::I32(l)] => (p as u32, l as u32),
        [Val::I64(packed)] => ((packed as u64 >> 32) as u32, packed as u32),
        _ => {
            return Err(GuestError::new(
                code::BAD_ARGS,
                format!("{name} must return (i32 ptr, i32 len) or an i64 ptr<<32|len"),
            ));
        }
    };
    let mem = memory(run)?;
    let bytes = mem.data(&run.store);
    let range = mem_range(bytes.len(), u64::from(out_ptr), u64::from(out_len))?;
    let output = bytes[range].to_vec();
    if let Some(dealloc) = run.instance.get_func(&mut run.store, "dealloc") {
        dealloc
            .call(
                &mut run.store,
                &[Val::I32(out_ptr as i32), Val::I32(out_len as i32)],
                &mut [],
            )
            .map_err(|e| run_error(e, 0))?;
    }
    Ok(output)
}

fn write_alloc(data: Vec<u8>) -> Result<u32, GuestError> {
    after_call(write_alloc_module(data))
}

fn write_alloc_module(data: Vec<u8>) -> Result<u32, GuestError> {
    let mut state = STATE.lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    alloc_and_write(run, &data)
}

fn read_memory(ptr: u64, len: u32) -> Result<Vec<u8>, GuestError> {
    let mut state = STATE.lock();
    let run = running(&mut state)?;
    let mem = memory(run)?;
    let bytes = mem.data(&run.store);
    let range = mem_range(bytes.len(), ptr, u64::from(len))?;
    Ok(bytes[range].to_vec())
}

fn write_memory(ptr: u64, data: Vec<u8>) -> Result<(), GuestError> {
    let mut state = STATE.lock();
    let run = running(&mut state)?;
    let mem = memory(run)?;
    let bytes = mem.data_mut(&mut run.store);
    let range = mem_range(bytes.len(), ptr, data.len() as u64)?;
    bytes[range].copy_from_slice(&data);
    Ok(())
}

fn memory_size() -> Result<u64, GuestError> {
    let mut state = STATE.lock();
    let run = running(&mut state)?;
    let mem = memory(run)?;
    Ok(mem.data(&run.store).len() as u64)
}

fn fuel_consumed() -> Result<u64, GuestError> {
    let mut state = STATE.lock();
    let fuel = state.loaded.as_ref().and_then(|l| l.fuel);
    let run = running(&mut state)?;
    match fuel {
        Some(total) => Ok(total.saturating_sub(run.store.get_fuel().unwrap_or(0))),
        None => Ok(0),
    }
}

/// `probe_wx(kind)`: a W^X self-test for the test suite (tests/kvm/wasm_wx.test.ts). Kind 0 writes
/// one byte into the mapped code region, kind 1 jumps into a heap (data) page holding `ret`. Both
/// must fault (a page fault the host reports as `GuestFaultError`), so neither returns.
fn probe_wx(kind: u32) -> Result<(), GuestError> {
    let state = STATE.lock();
    let Some(_) = state.loaded.as_ref() else {
        return Err(state_error("no module loaded"));
    };
    drop(state);
    match kind {
        0 => platform::write_code_page(),
        1 => platform::execute_data_page(),
        _ => Err(state_error("unknown probe")),
    }
}
