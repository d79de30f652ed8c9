//! `wasm-runtime`: the guest behind `WasmSandbox` with `engine: "wasmi"`. It embeds the wasmi
//! interpreter (no_std) on the `hl-guest` runtime. The requests, their handling and their encodings
//! are the shared crate's (`hl-wasm-service`, docs/wasm.md "Wire encodings"); this binary is the
//! wasmi [`Engine`]: compiling (validating) the module sent in `load`, linking, calling, and
//! mapping wasmi's errors. WASI preview 1 is `hl-wasi`, bound to wasmi by `wasi_wasmi.rs`.
#![no_std]
#![no_main]

extern crate alloc;

mod wasi_wasmi;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use hl_guest::GuestError;
use hl_wasm_service::{
    Engine, Export, ExternDesc, Failure, FuncSig, Import, Limits, Spinlock, State, Val, ValKind,
    code, parse_config, trap,
};
use wasmi::{
    Config, Error, ExternType, Func, FuncType, Instance, Linker, Module, Store, StoreLimits,
    StoreLimitsBuilder, TrapCode, ValType,
};

hl_wasm_service::guest_functions!(Wasmi);

/// The wasmi engine of the shared request handling.
pub struct Wasmi;

static STATE: Spinlock<State<Wasmi>> = Spinlock::new(State::new());

/// The most bytes wasmi's value stack (the Wasm operands and locals of every live frame, in the
/// guest heap, grown on demand) may take; wasmi's own default is 1,000,000. Beyond it a call is the
/// `stack_overflow` trap; a heap too small to grow it that far is wasmi's out-of-memory trap.
///
/// Sized for QuickJS (docs/js.md, "Limits"): its recursion in C over nested data (the parser,
/// `JSON.parse`/`JSON.stringify`) needs up to 9 bytes of value stack per byte of its own
/// linear-memory stack, so at the driver's largest stack limit (896 KiB) it stops itself with a
/// `RangeError` at about half of this (8 MiB). The frame limit, whose frames wasmi keeps in a
/// vector that it grows infallibly (so it must stay well within the heap), is the host's
/// (`maxRecursionDepth`; by default scaled to the heap, `src/runtime/engine.ts`).
const MAX_VALUE_STACK: usize = 16 * 1024 * 1024;

/// The data of the wasmi store.
pub struct HostState {
    limits: StoreLimits,
    wasi: Option<hl_wasi::WasiCtx>,
}

/// A module with its engine.
pub struct Loaded {
    engine: wasmi::Engine,
    module: Module,
}

/// A store with its instance.
pub struct Running {
    store: Store<HostState>,
    instance: Instance,
}

/// A host function's failure, carried through wasmi as a host error.
#[derive(Debug)]
struct HostFnError(String);

impl fmt::Display for HostFnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl wasmi::errors::HostError for HostFnError {}

fn kind(t: &ValType) -> ValKind {
    match t {
        ValType::I32 => ValKind::I32,
        ValType::I64 => ValKind::I64,
        ValType::F32 => ValKind::F32,
        ValType::F64 => ValKind::F64,
        ValType::V128 => ValKind::V128,
        ValType::FuncRef => ValKind::FuncRef,
        ValType::ExternRef => ValKind::ExternRef,
    }
}

fn sig(ty: &FuncType) -> FuncSig {
    FuncSig {
        params: ty.params().iter().map(kind).collect(),
        results: ty.results().iter().map(kind).collect(),
    }
}

fn desc(ty: &ExternType) -> ExternDesc {
    match ty {
        ExternType::Func(f) => ExternDesc::Func(sig(f)),
        ExternType::Table(t) => ExternDesc::Table {
            min: t.minimum(),
            max: t.maximum(),
        },
        ExternType::Memory(m) => ExternDesc::Memory {
            min: m.minimum(),
            max: m.maximum(),
        },
        ExternType::Global(g) => ExternDesc::Global {
            ty: kind(&g.content()),
            mutable: matches!(g.mutability(), wasmi::Mutability::Var),
        },
    }
}

fn to_wasmi(v: &Val) -> wasmi::Val {
    match *v {
        Val::I32(x) => wasmi::Val::I32(x),
        Val::I64(x) => wasmi::Val::I64(x),
        Val::F32(bits) => wasmi::Val::F32(wasmi::F32::from_bits(bits)),
        Val::F64(bits) => wasmi::Val::F64(wasmi::F64::from_bits(bits)),
    }
}

/// Values of the crossing types only (the handlers check the types before any call).
fn from_wasmi(v: &wasmi::Val) -> Val {
    match v {
        wasmi::Val::I32(x) => Val::I32(*x),
        wasmi::Val::I64(x) => Val::I64(*x),
        wasmi::Val::F32(x) => Val::F32(x.to_bits()),
        wasmi::Val::F64(x) => Val::F64(x.to_bits()),
        _ => Val::I32(0),
    }
}

fn default_for(t: ValKind) -> wasmi::Val {
    match t {
        ValKind::I64 => wasmi::Val::I64(0),
        ValKind::F32 => wasmi::Val::F32(wasmi::F32::from_bits(0)),
        ValKind::F64 => wasmi::Val::F64(wasmi::F64::from_bits(0)),
        _ => wasmi::Val::I32(0),
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

impl Engine for Wasmi {
    type Module = Loaded;
    type Instance = Running;
    type Func = Func;
    type Linker = Linker<HostState>;
    type FuncType = FuncType;
    type Error = Error;

    fn state() -> &'static Spinlock<State<Self>> {
        &STATE
    }

    /// Config: u64 fuel per call (0: no metering), u32 max recursion depth (0: wasmi's default).
    fn load(module: Vec<u8>, config: &[u8]) -> Result<(Loaded, Option<u64>), GuestError> {
        let (fuel, depth) = parse_config(config, |r| Ok((r.u64()?, r.u32()?)))?;
        let mut cfg = Config::default();
        cfg.consume_fuel(fuel != 0);
        cfg.set_max_stack_height(MAX_VALUE_STACK);
        if depth != 0 {
            cfg.set_max_recursion_depth(depth as usize);
        }
        let engine = wasmi::Engine::new(&cfg);
        let module = Module::new(&engine, &module[..])
            .map_err(|e| GuestError::new(code::MODULE, e.to_string()))?;
        Ok((Loaded { engine, module }, (fuel != 0).then_some(fuel)))
    }

    fn imports(m: &Loaded) -> Vec<Import<FuncType>> {
        m.module
            .imports()
            .map(|i| Import {
                module: i.module().into(),
                name: i.name().into(),
                desc: Ok(desc(i.ty())),
                func: i.ty().func().cloned(),
            })
            .collect()
    }

    fn exports(m: &Loaded) -> Vec<Export> {
        m.module
            .exports()
            .map(|e| Export {
                name: e.name().into(),
                desc: Ok(desc(e.ty())),
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
        let results: Vec<ValKind> = ty.results().iter().map(kind).collect();
        linker
            .func_new(module, name, ty, move |_caller, params, out| {
                let params: Vec<Val> = params.iter().map(from_wasmi).collect();
                let vals = hl_wasm_service::host_import(index, &results, &params)
                    .map_err(|e| Error::host(HostFnError(e)))?;
                for (slot, v) in out.iter_mut().zip(&vals) {
                    *slot = to_wasmi(v);
                }
                Ok(())
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn define_wasi(linker: &mut Linker<HostState>, name: &str, ty: FuncType) -> Result<(), String> {
        wasi_wasmi::define(linker, name, &ty)
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
        let mut store = Store::new(&m.engine, state);
        store.limiter(|s| &mut s.limits);
        if let Some(fuel) = fuel {
            store.set_fuel(fuel)?;
        }
        let instance = linker.instantiate_and_start(&mut store, &m.module)?;
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
        run.instance.get_func(&run.store, name)
    }

    fn func_sig(run: &Running, func: Func) -> FuncSig {
        sig(&func.ty(&run.store))
    }

    fn call(
        run: &mut Running,
        func: Func,
        params: &[Val],
        results: &[ValKind],
    ) -> Result<Vec<Val>, Error> {
        let params: Vec<wasmi::Val> = params.iter().map(to_wasmi).collect();
        let mut out: Vec<wasmi::Val> = results.iter().map(|t| default_for(*t)).collect();
        func.call(&mut run.store, &params, &mut out)?;
        Ok(out.iter().map(from_wasmi).collect())
    }

    fn memory(run: &mut Running) -> Option<&mut [u8]> {
        let mem = run.instance.get_memory(&run.store, "memory")?;
        Some(mem.data_mut(&mut run.store))
    }

    fn failure(e: Error) -> Failure {
        if let Some(status) = e.i32_exit_status() {
            return Failure::Exit(status);
        }
        if let Some(trap) = e.as_trap_code() {
            return Failure::Trap {
                index: trap_index(trap),
                message: trap.trap_message().into(),
            };
        }
        if let Some(host) = e.downcast_ref::<HostFnError>() {
            return Failure::Host(host.0.clone());
        }
        Failure::Other(e.to_string())
    }
}
