//! `wasmtime-runtime`: the guest behind `WasmSandbox` with `engine: "wasmtime"`. It runs modules
//! that the host compiled ahead of time with Cranelift (`compiler/`, the same wasmtime version and
//! `engine_config.rs`) on `no_std` wasmtime, and speaks the same request protocol as the wasmi
//! guest (`hl-wasm-service` handles the requests for both; this binary is the wasmtime `Engine`),
//! with one difference: `load` gets
//! no module bytes; the compiled artifact is already mapped into the VM by the host, read-only and
//! executable (docs/design.md, "Code publishing"), and the request says where.
//!
//! W^X: the guest never writes code and never changes page tables. wasmtime's "publish as
//! executable" hook only checks that the text lies inside the host-mapped code region; the page
//! tables there are already user, read-only, executable, and everything else is non-executable.
#![no_std]
#![no_main]

extern crate alloc;

mod engine_config;
mod memory;
mod platform;
mod wasi_wasmtime;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use hl_guest::GuestError;
use hl_wasm_service::{
    Engine, Export, ExternDesc, Failure, FuncSig, Import, Limits, Spinlock, State, Val, ValKind,
    code, parse_config, state_error, trap,
};
use wasmtime::{
    Config, Error, ExternType, Func, FuncType, Instance, Linker, Module, Mutability, Store,
    StoreLimits, StoreLimitsBuilder, Trap, ValType,
};

hl_wasm_service::guest_functions!(Wasmtime; probe_wx, memory_copied);

/// The wasmtime engine of the shared request handling.
pub struct Wasmtime;

static STATE: Spinlock<State<Wasmtime>> = Spinlock::new(State::new());

/// Bytes of Wasm stack per frame that `maxRecursionDepth` is converted with: wasmtime limits the
/// Wasm stack in bytes (`max_wasm_stack`), not in frames.
const STACK_BYTES_PER_FRAME: usize = 128;
/// The smallest Wasm stack limit `maxRecursionDepth` or the guest stack can give.
const MIN_WASM_STACK: usize = 16 * 1024;
/// Guest stack that the Wasm stack limit leaves free: the guest runtime's and wasmtime's frames
/// above the first Wasm frame, and host calls (imports, WASI) made from the deepest one, which
/// wasmtime does not check. The host's least `stackSize` for this engine (1 MiB,
/// `src/runtime/engine.ts`) is this plus [`MIN_WASM_STACK`] and more.
const WASM_STACK_HEADROOM: usize = 512 * 1024;

/// The Wasm stack limit (bytes) for a guest stack of `stack` bytes and a `maxRecursionDepth` of
/// `depth` (0: none): the guest stack less [`WASM_STACK_HEADROOM`], lowered by `depth`, within
/// [`MIN_WASM_STACK`] and `MAX_WASM_STACK`. A stack too small for the headroom is an error, never
/// a limit past the end of the stack.
fn wasm_stack_limit(stack: u64, depth: u32) -> Result<usize, GuestError> {
    let stack = usize::try_from(stack).unwrap_or(usize::MAX);
    let room = stack
        .checked_sub(WASM_STACK_HEADROOM)
        .filter(|&r| r >= MIN_WASM_STACK)
        .ok_or_else(|| state_error(&format!("guest stack of {stack} bytes is too small")))?;
    let mut limit = room.min(engine_config::MAX_WASM_STACK);
    if depth != 0 {
        limit = limit.min((depth as usize).saturating_mul(STACK_BYTES_PER_FRAME));
    }
    Ok(limit.max(MIN_WASM_STACK))
}

/// The data of the wasmtime store.
pub struct HostState {
    limits: StoreLimits,
    /// WASI state (`hl-wasi`); `None` without WASI.
    wasi: Option<hl_wasi::WasiCtx>,
}

/// A module with its engine.
pub struct Loaded {
    engine: wasmtime::Engine,
    module: Module,
}

/// A store with its instance.
pub struct Running {
    store: Store<HostState>,
    instance: Instance,
}

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

/// The engine: the compiler's settings (`engine_config.rs`), with the platform hooks of this
/// guest, and the Wasm stack limit from the guest stack and `max_recursion_depth`
/// ([`wasm_stack_limit`]).
fn engine(
    fuel: bool,
    wasm_stack: usize,
    code: platform::CodeRegion,
) -> Result<wasmtime::Engine, GuestError> {
    let mut cfg = Config::new();
    engine_config::configure(&mut cfg, fuel);
    cfg.max_wasm_stack(wasm_stack);
    cfg.with_custom_code_memory(Some(Arc::new(code)));
    // Linear memories reserve their reachable size up front and grow in place (`memory.rs`).
    cfg.with_host_memory(Arc::new(memory::Creator));
    // Bounds are checked by guard pages: the host delivers their faults here (`platform.rs`).
    platform::publish_trap_entry();
    // SAFETY: `detect` answers from this vCPU's CPUID and XCR0, and only "yes" for features the
    // CPU has and whose state the VM enables (SSE; AVX only with OSXSAVE and XCR0's AVX state).
    unsafe {
        cfg.detect_host_feature(platform::detect);
    }
    wasmtime::Engine::new(&cfg).map_err(|e| state_error(&format!("engine: {e}")))
}

/// A value type's wire kind; `None` for reference types the wire cannot describe.
fn kind(t: &ValType) -> Option<ValKind> {
    Some(match t {
        ValType::I32 => ValKind::I32,
        ValType::I64 => ValKind::I64,
        ValType::F32 => ValKind::F32,
        ValType::F64 => ValKind::F64,
        ValType::V128 => ValKind::V128,
        ValType::Ref(r) if r.heap_type().is_func() => ValKind::FuncRef,
        ValType::Ref(r) if r.heap_type().is_extern() => ValKind::ExternRef,
        ValType::Ref(_) => return None,
    })
}

fn kinds(types: impl Iterator<Item = ValType>) -> Result<Vec<ValKind>, String> {
    types
        .map(|t| kind(&t).ok_or_else(|| String::from("unsupported reference type")))
        .collect()
}

fn sig(ty: &FuncType) -> Result<FuncSig, String> {
    Ok(FuncSig {
        params: kinds(ty.params())?,
        results: kinds(ty.results())?,
    })
}

fn desc(ty: &ExternType) -> Result<ExternDesc, String> {
    Ok(match ty {
        ExternType::Func(f) => ExternDesc::Func(sig(f)?),
        ExternType::Table(t) => ExternDesc::Table {
            min: t.minimum(),
            max: t.maximum(),
        },
        ExternType::Memory(m) => ExternDesc::Memory {
            min: m.minimum(),
            max: m.maximum(),
        },
        ExternType::Global(g) => ExternDesc::Global {
            ty: kind(g.content()).ok_or_else(|| String::from("unsupported reference type"))?,
            mutable: matches!(g.mutability(), Mutability::Var),
        },
        ExternType::Tag(_) => return Err(String::from("exception tags are not supported")),
    })
}

fn to_wasmtime(v: &Val) -> wasmtime::Val {
    match *v {
        Val::I32(x) => wasmtime::Val::I32(x),
        Val::I64(x) => wasmtime::Val::I64(x),
        Val::F32(bits) => wasmtime::Val::F32(bits),
        Val::F64(bits) => wasmtime::Val::F64(bits),
    }
}

/// Values of the crossing types only (the handlers check the types before any call).
fn from_wasmtime(v: &wasmtime::Val) -> Val {
    match *v {
        wasmtime::Val::I32(x) => Val::I32(x),
        wasmtime::Val::I64(x) => Val::I64(x),
        wasmtime::Val::F32(bits) => Val::F32(bits),
        wasmtime::Val::F64(bits) => Val::F64(bits),
        _ => Val::I32(0),
    }
}

fn default_for(t: ValKind) -> wasmtime::Val {
    match t {
        ValKind::I64 => wasmtime::Val::I64(0),
        ValKind::F32 => wasmtime::Val::F32(0),
        ValKind::F64 => wasmtime::Val::F64(0),
        _ => wasmtime::Val::I32(0),
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

impl Engine for Wasmtime {
    type Module = Loaded;
    type Instance = Running;
    type Func = Func;
    type Linker = Linker<HostState>;
    type FuncType = FuncType;
    type Error = Error;

    fn state() -> &'static Spinlock<State<Self>> {
        &STATE
    }

    /// `module` must be empty (the code is mapped, not sent). Config: u64 fuel (0: off), u32 max
    /// recursion depth (0: default), u64 address and u64 length of the mapped artifact, u64 size of
    /// the guest stack (the host's `stackSize`: the Wasm stack limit is derived from it).
    fn load(module: Vec<u8>, config: &[u8]) -> Result<(Loaded, Option<u64>), GuestError> {
        let (fuel, depth, addr, len, stack) = parse_config(config, |r| {
            Ok((r.u64()?, r.u32()?, r.u64()?, r.u64()?, r.u64()?))
        })?;
        let wasm_stack = wasm_stack_limit(stack, depth)?;
        if !module.is_empty() {
            return Err(state_error(
                "this guest runs mapped artifacts; send no bytes",
            ));
        }
        let region = platform::CodeRegion::new(addr, len).map_err(|e| state_error(&e))?;
        let engine = engine(fuel != 0, wasm_stack, region)?;
        // SAFETY: the region is the host's read-only mapping of an artifact the host compiled
        // with the same wasmtime and settings (and checked before mapping); it stays mapped,
        // unchanged, for the VM's lifetime, so it outlives the module. wasmtime validates the
        // header (version, settings, CPU features) and refuses anything else with an error.
        let module = unsafe { Module::deserialize_raw(&engine, region.as_slice()) }
            .map_err(|e| GuestError::new(code::ARTIFACT, format!("{e:#}")))?;
        Ok((Loaded { engine, module }, (fuel != 0).then_some(fuel)))
    }

    fn imports(m: &Loaded) -> Vec<Import<FuncType>> {
        m.module
            .imports()
            .map(|i| {
                let ty = i.ty();
                Import {
                    module: i.module().into(),
                    name: i.name().into(),
                    desc: desc(&ty),
                    func: ty.func().cloned(),
                }
            })
            .collect()
    }

    fn exports(m: &Loaded) -> Vec<Export> {
        m.module
            .exports()
            .map(|e| Export {
                name: e.name().into(),
                desc: desc(&e.ty()),
            })
            .collect()
    }

    fn linker(m: &Loaded) -> Linker<HostState> {
        Linker::new(&m.engine)
    }

    fn define_import(
        linker: &mut Linker<HostState>,
        module: &str,
        name: &str,
        ty: FuncType,
        index: u32,
    ) -> Result<(), String> {
        let results = kinds(ty.results())?;
        linker
            .func_new(module, name, ty, move |_caller, params, out| {
                let params: Vec<Val> = params.iter().map(from_wasmtime).collect();
                let vals = hl_wasm_service::host_import(index, &results, &params)
                    .map_err(|e| Error::new(HostFnError(e)))?;
                for (slot, v) in out.iter_mut().zip(&vals) {
                    *slot = to_wasmtime(v);
                }
                Ok(())
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn define_wasi(linker: &mut Linker<HostState>, name: &str, ty: FuncType) -> Result<(), String> {
        wasi_wasmtime::define(linker, name, ty)
    }

    fn instantiate(
        linker: Linker<HostState>,
        m: &Loaded,
        limits: Limits,
        wasi: Option<hl_wasi::WasiCtx>,
        fuel: Option<u64>,
    ) -> Result<Running, Error> {
        let mut builder = StoreLimitsBuilder::new()
            .instances(1)
            .tables(16)
            .memories(16);
        if let Some(max) = limits.memory() {
            builder = builder.memory_size(max);
        }
        if let Some(max) = limits.table() {
            builder = builder.table_elements(max);
        }
        let state = HostState {
            limits: builder.build(),
            wasi,
        };
        memory::set_limit(limits.memory());
        let mut store = Store::new(&m.engine, state);
        store.limiter(|s| &mut s.limits);
        if let Some(fuel) = fuel {
            store.set_fuel(fuel)?;
        }
        let instance = linker.instantiate(&mut store, &m.module)?;
        Ok(Running { store, instance })
    }

    fn set_fuel(run: &mut Running, fuel: u64) -> Result<(), String> {
        run.store.set_fuel(fuel).map_err(|e| e.to_string())
    }

    fn fuel(run: &Running) -> Option<u64> {
        run.store.get_fuel().ok()
    }

    fn wasi(run: &mut Running) -> Option<&mut hl_wasi::WasiCtx> {
        run.store.data_mut().wasi.as_mut()
    }

    fn func(run: &mut Running, name: &str) -> Option<Func> {
        run.instance.get_func(&mut run.store, name)
    }

    /// A type the wire cannot describe has no crossing values: the handlers refuse it as
    /// `externref` (neither parameters nor results of such a type cross).
    fn func_sig(run: &Running, func: Func) -> FuncSig {
        let ty = func.ty(&run.store);
        let all = |types: &mut dyn Iterator<Item = ValType>| {
            types
                .map(|t| kind(&t).unwrap_or(ValKind::ExternRef))
                .collect()
        };
        FuncSig {
            params: all(&mut ty.params()),
            results: all(&mut ty.results()),
        }
    }

    fn call(
        run: &mut Running,
        func: Func,
        params: &[Val],
        results: &[ValKind],
    ) -> Result<Vec<Val>, Error> {
        let params: Vec<wasmtime::Val> = params.iter().map(to_wasmtime).collect();
        let mut out: Vec<wasmtime::Val> = results.iter().map(|t| default_for(*t)).collect();
        func.call(&mut run.store, &params, &mut out)?;
        Ok(out.iter().map(from_wasmtime).collect())
    }

    fn memory(run: &mut Running) -> Option<&mut [u8]> {
        let mem = run.instance.get_memory(&mut run.store, "memory")?;
        Some(mem.data_mut(&mut run.store))
    }

    fn failure(e: Error) -> Failure {
        if let Some(ExitStatus(status)) = e.downcast_ref::<ExitStatus>() {
            return Failure::Exit(*status);
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            // Since the `gc` feature, wasmtime's Display of a trap starts with "wasm trap: ";
            // the host's WasmTrapError adds its own "wasm trap (kind): " before the message.
            let text = trap.to_string();
            let message = match text.strip_prefix("wasm trap: ") {
                Some(rest) => alloc::string::String::from(rest),
                None => text,
            };
            return Failure::Trap {
                index: trap_index(*trap),
                message,
            };
        }
        if let Some(host) = e.downcast_ref::<HostFnError>() {
            return Failure::Host(host.0.clone());
        }
        Failure::Other(format!("{e:#}"))
    }
}

/// `probe_wx(kind)`: a W^X self-test for the test suite (tests/kvm/wasm_wx.test.ts). Kind 0 writes
/// one byte into the mapped code region, kind 1 jumps into a heap (data) page holding `ret`. Both
/// must fault (a page fault the host reports as `GuestFaultError`), so neither returns.
fn probe_wx(kind: u32) -> Result<(), GuestError> {
    if !STATE.lock().is_loaded() {
        return Err(state_error("no module loaded"));
    }
    match kind {
        0 => platform::write_code_page(),
        1 => platform::execute_data_page(),
        _ => Err(state_error("unknown probe")),
    }
}

/// `memory_copied()`: bytes that `memory.grow` has copied since the guest started (0 while every
/// memory grew inside its reserve; `memory.rs`), for the tests and the bench.
fn memory_copied() -> Result<u64, GuestError> {
    Ok(memory::bytes_copied())
}
