//! `wasm-runtime`: the guest behind `WasmSandbox` (`src/wasm_sandbox.ts`). It embeds the wasmi
//! interpreter (no_std) on the `hl-guest` runtime: the host sends a module (`load`), the guest
//! validates it and describes its imports and exports, the host checks the imports against its
//! host functions and asks to `instantiate`, then calls exports (`invoke`, `call_bytes`) and
//! reads or writes the module's memory. Imports call the host through one host function,
//! `wasm_import`; WASI preview 1 is answered here (the `hl-wasi` crate, bound to wasmi by
//! `wasi_wasmi.rs`, crossing to the host through `wasi_host.rs`). The request and reply encodings
//! and the error codes are in docs/wasm.md.
#![no_std]
#![no_main]

extern crate alloc;

mod codec;
mod wasi_host;
mod wasi_wasmi;

use hl_wasi as wasi;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use hl_guest::{GuestError, HostError, Value, call_host};
use spinning_top::Spinlock;
use wasmi::{
    Config, Engine, Error, ExternType, Func, Instance, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, TrapCode, Val, ValType,
};

use codec::{Writer, read_vals, write_vals};
use hl_guest::wire::{DecodeError, Reader};

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
];

/// ERROR codes, shared with the other Wasm runtime guest.
use hl_wasm_abi::{code, trap};

/// The data of the wasmi store.
pub struct HostState {
    limits: StoreLimits,
    wasi: Option<wasi::WasiCtx>,
}

struct Loaded {
    engine: Engine,
    module: Module,
    /// Fuel given to every call (and to instantiation); `None` when metering is off.
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

/// A host function's failure, carried through wasmi as a host error.
#[derive(Debug)]
struct HostFnError(String);

impl fmt::Display for HostFnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl wasmi::errors::HostError for HostFnError {}

fn state_error(message: &str) -> GuestError {
    GuestError::new(code::STATE, message)
}

/// `load(module, config)`: validates and compiles the module, returns its description.
///
/// Config: u64 fuel per call (0: no metering), u32 max recursion depth (0: wasmi's default).
/// Reply: u32 import count, each `str module, str name, extern type`; u32 export count, each
/// `str name, extern type` (encodings in `codec.rs`).
fn load(module: Vec<u8>, config: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut r = Reader::new(&config);
    let parse = |r: &mut Reader<'_>| -> Result<(u64, u32), DecodeError> {
        let fuel = r.u64()?;
        let depth = r.u32()?;
        r.finish()?;
        Ok((fuel, depth))
    };
    let (fuel, depth) = parse(&mut r).map_err(|e| state_error(&e.to_string()))?;
    let mut cfg = Config::default();
    cfg.consume_fuel(fuel != 0);
    if depth != 0 {
        cfg.set_max_recursion_depth(depth as usize);
    }
    let engine = Engine::new(&cfg);
    let compiled = Module::new(&engine, &module[..])
        .map_err(|e| GuestError::new(code::MODULE, e.to_string()))?;
    let mut w = Writer::default();
    w.u32(compiled.imports().len() as u32);
    for import in compiled.imports() {
        w.str(import.module());
        w.str(import.name());
        w.extern_type(import.ty())
            .map_err(|e| GuestError::new(code::MODULE, e))?;
    }
    w.u32(compiled.exports().count() as u32);
    for export in compiled.exports() {
        w.str(export.name());
        w.extern_type(export.ty())
            .map_err(|e| GuestError::new(code::MODULE, e))?;
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

/// `instantiate(config)`: links the imports and instantiates (running the start function).
///
/// Config: `hl_wasi::InstantiateRequest`.
fn instantiate(config: Vec<u8>) -> Result<(), GuestError> {
    let req = wasi::InstantiateRequest::parse(&config).map_err(|e| state_error(&e.to_string()))?;
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
            continue; // The same name imported twice: one definition serves both.
        }
        if wasi_on && module == "wasi_snapshot_preview1" {
            wasi_wasmi::define(&mut linker, name, ty)
                .map_err(|e| GuestError::new(code::LINK, e))?;
            continue;
        }
        let results: Vec<ValType> = ty.results().to_vec();
        let index = index as u32;
        linker
            .func_new(module, name, ty.clone(), move |_caller, params, out| {
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
        .instantiate_and_start(&mut store, &loaded.module)
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
) -> Result<(), Error> {
    let args = write_vals(params).map_err(Error::new)?;
    match call_host("wasm_import", &[Value::U32(index), Value::Bytes(args)]) {
        Ok(Value::Bytes(bytes)) => {
            let vals = read_vals(&bytes, results)
                .map_err(|e| Error::host(HostFnError(format!("bad host result: {e}"))))?;
            for (slot, v) in out.iter_mut().zip(vals) {
                *slot = v;
            }
            Ok(())
        }
        Ok(other) => Err(Error::host(HostFnError(format!(
            "wasm_import returned {} instead of bytes",
            other.value_type()
        )))),
        Err(HostError::Failed(message)) => Err(Error::host(HostFnError(message))),
        Err(e) => Err(Error::host(HostFnError(e.to_string()))),
    }
}

/// The index of a trap kind (ERROR code `TRAP_BASE + index`).
fn trap_index(code: TrapCode) -> u32 {
    match code {
        TrapCode::UnreachableCodeReached => trap::UNREACHABLE,
        TrapCode::MemoryOutOfBounds => trap::MEMORY_OUT_OF_BOUNDS,
        TrapCode::TableOutOfBounds => trap::TABLE_OUT_OF_BOUNDS,
        TrapCode::IndirectCallToNull => trap::INDIRECT_CALL_TO_NULL,
        TrapCode::IntegerDivisionByZero => trap::INTEGER_DIVIDE_BY_ZERO,
        TrapCode::IntegerOverflow => trap::INTEGER_OVERFLOW,
        TrapCode::BadConversionToInteger => trap::INVALID_CONVERSION_TO_INTEGER,
        TrapCode::StackOverflow => trap::STACK_OVERFLOW,
        TrapCode::BadSignature => trap::INDIRECT_CALL_TYPE_MISMATCH,
        TrapCode::OutOfFuel => trap::OUT_OF_FUEL,
        TrapCode::GrowthOperationLimited => trap::GROWTH_LIMITED,
        TrapCode::OutOfSystemMemory => trap::OUT_OF_MEMORY,
    }
}

/// Maps an error of a running module: exit, trap, host failure; anything else gets `other`.
fn run_error(e: Error, other: u32) -> GuestError {
    if let Some(status) = e.i32_exit_status() {
        return GuestError::new(code::EXIT, status.to_string());
    }
    if let Some(trap) = e.as_trap_code() {
        return GuestError::new(code::TRAP_BASE + trap_index(trap), trap.trap_message());
    }
    if let Some(host) = e.downcast_ref::<HostFnError>() {
        return GuestError::new(code::TRAP_BASE + trap::HOST, host.0.clone());
    }
    let message = e.to_string();
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

fn export_func(run: &Running, name: &str) -> Result<Func, GuestError> {
    run.instance
        .get_func(&run.store, name)
        .ok_or_else(|| GuestError::new(code::NO_EXPORT, format!("no exported function \"{name}\"")))
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

/// `invoke(name, args)`: calls an exported function with packed arguments, returns the packed
/// results.
fn invoke(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    after_call(invoke_module(name, args))
}

fn invoke_module(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = STATE.lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    let func = export_func(run, &name)?;
    let ty = func.ty(&run.store);
    let params = read_vals(&args, ty.params()).map_err(|e| GuestError::new(code::BAD_ARGS, e))?;
    // Refused before the call (as the wasmtime guest does): a function whose results cannot
    // cross must not run its side effects first.
    if ty
        .results()
        .iter()
        .any(|t| !matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64))
    {
        return Err(GuestError::new(
            code::BAD_ARGS,
            "reference and vector values cannot cross",
        ));
    }
    let mut results: Vec<Val> = ty
        .results()
        .iter()
        .map(|t| Val::default_for_ty(*t))
        .collect();
    func.call(&mut run.store, &params, &mut results)
        .map_err(|e| run_error(e, 0))?;
    write_vals(&results).map_err(|e| GuestError::new(code::BAD_ARGS, e))
}

fn memory(run: &Running) -> Result<Memory, GuestError> {
    run.instance
        .get_memory(&run.store, "memory")
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

/// Calls `alloc(len) -> ptr` and copies `data` there.
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

/// `call_bytes(name, input)`: the bytes convention (docs/wasm.md): `alloc(len) -> ptr`, copy
/// the input, call `name(ptr, len)` whose result is `(ptr, len)` (two i32s) or one i64
/// `ptr << 32 | len`, copy the output, then `dealloc(ptr, len)` on it when exported.
fn call_bytes(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    after_call(call_bytes_module(name, input))
}

fn call_bytes_module(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = STATE.lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    let func = export_func(run, &name)?;
    let ty = func.ty(&run.store);
    if ty.params() != [ValType::I32, ValType::I32] {
        return Err(GuestError::new(
            code::BAD_ARGS,
            format!("{name} must take (i32 ptr, i32 len) for the bytes convention"),
        ));
    }
    let ptr = alloc_and_write(run, &input)?;
    let mut results: Vec<Val> = ty
        .results()
        .iter()
        .map(|t| Val::default_for_ty(*t))
        .collect();
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
    if let Some(dealloc) = run.instance.get_func(&run.store, "dealloc") {
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

/// `write_alloc(data)`: `alloc(len)`, copy, return the pointer.
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

/// Size of the exported `memory` in bytes.
fn memory_size() -> Result<u64, GuestError> {
    let mut state = STATE.lock();
    let run = running(&mut state)?;
    let mem = memory(run)?;
    Ok(mem.data(&run.store).len() as u64)
}

/// Fuel consumed by the last call (0 when metering is off).
fn fuel_consumed() -> Result<u64, GuestError> {
    let mut state = STATE.lock();
    let fuel = state.loaded.as_ref().and_then(|l| l.fuel);
    let run = running(&mut state)?;
    match fuel {
        Some(total) => Ok(total.saturating_sub(run.store.get_fuel().unwrap_or(0))),
        None => Ok(0),
    }
}
