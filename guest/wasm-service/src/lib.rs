//! `hl-wasm-service`: the request handling that both Wasm runtime guests share — `wasm-runtime`
//! (wasmi) and `wasmtime-runtime` (wasmtime) — written once, each engine behind the [`Engine`]
//! trait. The host (`src/wasm/`) sends a module (`load`), the guest describes its imports and
//! exports, the host asks to `instantiate`, then calls exports (`invoke`, `call_bytes`,
//! `write_alloc`) and reads or writes the module's memory. Imports call the host through one host
//! function, `wasm_import`; WASI preview 1 is answered in the guest (`hl-wasi`, crossing to the
//! host through [`wasi_host::HlHost`]). The request and reply encodings and the error codes are in
//! docs/wasm.md; this crate owns them (one wire protocol, whatever the engine).
//!
//! A guest binary implements [`Engine`] for its engine and declares its guest functions with
//! [`guest_functions!`](crate::guest_functions), which lists the shared handlers (plus any of the
//! binary's own).
#![no_std]

extern crate alloc;

pub mod codec;
pub mod wasi_host;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hl_guest::wire::{DecodeError, Reader};
use hl_guest::{GuestError, HostError, Value, call_host};
use hl_wasi::{InstantiateRequest, WasiCtx, read_list, read_seed};
pub use spinning_top::Spinlock;

pub use codec::{CANNOT_CROSS, ExternDesc, FuncSig, Val, ValKind, Writer};
use codec::{read_vals, write_vals};
pub use hl_wasm_abi::{code, trap};

#[doc(hidden)]
pub mod __private {
    pub use hl_guest::guest_functions;
}

/// An import of a module: its names, its description for the `load` reply and, for a function,
/// the engine's type of it (to define it in a linker).
pub struct Import<F> {
    pub module: String,
    pub name: String,
    /// The description, or why it cannot be described (the module is refused: `MODULE`).
    pub desc: Result<ExternDesc, String>,
    /// The function type; `None` for any other kind of import (refused at `instantiate`: `LINK`).
    pub func: Option<F>,
}

/// An export of a module: its name and description (or why it cannot be described).
pub struct Export {
    pub name: String,
    pub desc: Result<ExternDesc, String>,
}

/// The store limits of an instantiation (0: no limit).
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_memory: u64,
    pub max_table: u64,
}

impl Limits {
    /// The memory limit in bytes, when there is one.
    pub fn memory(&self) -> Option<usize> {
        (self.max_memory != 0).then(|| usize::try_from(self.max_memory).unwrap_or(usize::MAX))
    }

    /// The table limit in elements, when there is one.
    pub fn table(&self) -> Option<usize> {
        (self.max_table != 0).then(|| usize::try_from(self.max_table).unwrap_or(usize::MAX))
    }
}

/// How a call into the module failed, as the engine classifies its error.
pub enum Failure {
    /// WASI `proc_exit` with this status (ERROR `EXIT`).
    Exit(i32),
    /// A trap: `index` in `hl_wasm_abi::trap` (ERROR `TRAP_BASE + index`).
    Trap { index: u32, message: String },
    /// A host function (an import) failed.
    Host(String),
    /// Anything else.
    Other(String),
}

/// One Wasm engine as the shared handlers use it. Implemented by each runtime guest for its
/// engine (wasmi in `wasm-runtime`, wasmtime in `wasmtime-runtime`); the handlers own the wire
/// protocol, the engine only compiles, links, runs and converts.
pub trait Engine: Sized + 'static {
    /// A loaded module with the engine it was loaded into.
    type Module;
    /// A store with its one instance.
    type Instance;
    /// An exported function.
    type Func: Copy;
    /// The engine's linker while imports are defined.
    type Linker;
    /// The engine's function type (of an import).
    type FuncType;
    /// The engine's error from instantiating or calling.
    type Error;

    /// The guest's one state (a `static` of the guest binary).
    fn state() -> &'static Spinlock<State<Self>>;

    /// `load`: parses the engine's config, then compiles (or maps) the module. Returns the module
    /// and the fuel given to every call (`None`: no metering).
    fn load(module: Vec<u8>, config: &[u8]) -> Result<(Self::Module, Option<u64>), GuestError>;

    /// The module's imports, in order (an import's index is its position).
    fn imports(module: &Self::Module) -> Vec<Import<Self::FuncType>>;

    /// The module's exports, in order.
    fn exports(module: &Self::Module) -> Vec<Export>;

    /// A new linker for `module`'s engine.
    fn linker(module: &Self::Module) -> Self::Linker;

    /// Defines import `index` (`module.name`, a function of type `ty`) as a call to the host:
    /// the definition calls [`host_import`].
    fn define_import(
        linker: &mut Self::Linker,
        module: &str,
        name: &str,
        ty: Self::FuncType,
        index: u32,
    ) -> Result<(), String>;

    /// Defines the WASI import `wasi_snapshot_preview1.<name>` (the engine's `hl-wasi` adapter).
    fn define_wasi(linker: &mut Self::Linker, name: &str, ty: Self::FuncType)
    -> Result<(), String>;

    /// Creates the store (with `limits`, `wasi` and `fuel`) and instantiates, running the start
    /// function.
    fn instantiate(
        linker: Self::Linker,
        module: &Self::Module,
        limits: Limits,
        wasi: Option<WasiCtx>,
        fuel: Option<u64>,
    ) -> Result<Self::Instance, Self::Error>;

    /// Sets the store's fuel.
    fn set_fuel(instance: &mut Self::Instance, fuel: u64) -> Result<(), String>;

    /// The store's fuel left (`None` without metering).
    fn fuel(instance: &Self::Instance) -> Option<u64>;

    /// The store's WASI state, when WASI is on.
    fn wasi(instance: &mut Self::Instance) -> Option<&mut WasiCtx>;

    /// The exported function `name`.
    fn func(instance: &mut Self::Instance, name: &str) -> Option<Self::Func>;

    /// The type of `func`.
    fn func_sig(instance: &Self::Instance, func: Self::Func) -> FuncSig;

    /// Calls `func`; `results` are its result types (all of which can cross: checked before).
    fn call(
        instance: &mut Self::Instance,
        func: Self::Func,
        params: &[Val],
        results: &[ValKind],
    ) -> Result<Vec<Val>, Self::Error>;

    /// The bytes of the exported memory named `memory`.
    fn memory(instance: &mut Self::Instance) -> Option<&mut [u8]>;

    /// Classifies an error of instantiating or calling (exit, trap kind, host failure).
    fn failure(error: Self::Error) -> Failure;
}

struct Loaded<E: Engine> {
    module: E::Module,
    /// Fuel given to every call (and to instantiation); `None` when metering is off.
    fuel: Option<u64>,
}

/// The guest's state: the loaded module, and its instance once instantiated.
pub struct State<E: Engine> {
    loaded: Option<Loaded<E>>,
    running: Option<E::Instance>,
    /// `_start` was entered since the instance was made (`invoke` or `run_wasi`). In the guest's
    /// memory, so a restore to a snapshot taken before `_start` clears it.
    started: bool,
}

impl<E: Engine> State<E> {
    /// Nothing loaded.
    pub const fn new() -> Self {
        Self {
            loaded: None,
            running: None,
            started: false,
        }
    }

    /// Whether a module is loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.is_some()
    }
}

impl<E: Engine> Default for State<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// Declares the guest functions of a Wasm runtime guest: the shared handlers for engine `$engine`,
/// then the binary's own functions (`hl_guest::guest_functions!` syntax).
///
/// ```ignore
/// hl_wasm_service::guest_functions!(Wasmtime; probe_wx);
/// ```
#[macro_export]
macro_rules! guest_functions {
    ($engine:ty $(; $($extra:tt)*)?) => {
        $crate::__private::guest_functions![
            $crate::load::<$engine> => "load",
            $crate::instantiate::<$engine> => "instantiate",
            $crate::invoke::<$engine> => "invoke",
            $crate::call_bytes::<$engine> => "call_bytes",
            $crate::run_wasi::<$engine> => "run_wasi",
            $crate::write_alloc::<$engine> => "write_alloc",
            $crate::read_memory::<$engine> => "read_memory",
            $crate::write_memory::<$engine> => "write_memory",
            $crate::memory_size::<$engine> => "memory_size",
            $crate::fuel_consumed::<$engine> => "fuel_consumed",
            $($($extra)*)?
        ];
    };
}

/// A request out of order or malformed (`STATE`).
pub fn state_error(message: &str) -> GuestError {
    GuestError::new(code::STATE, message)
}

/// Parses a request's config with `parse`; a malformed one is `STATE`.
pub fn parse_config<T>(
    config: &[u8],
    parse: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, GuestError> {
    let mut r = Reader::new(config);
    let value = parse(&mut r).and_then(|v| r.finish().map(|()| v));
    value.map_err(|e| state_error(&e.to_string()))
}

/// `load(module, config)`: loads the module (the engine's config), returns its description.
///
/// Reply: u32 import count, each `str module, str name, extern type`; u32 export count, each
/// `str name, extern type` (encodings in `codec.rs`).
pub fn load<E: Engine>(module: Vec<u8>, config: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let (module, fuel) = E::load(module, &config)?;
    let described = |desc: &Result<ExternDesc, String>, w: &mut Writer| {
        desc.as_ref()
            .map_err(Clone::clone)
            .and_then(|d| w.extern_type(d))
            .map_err(|e| GuestError::new(code::MODULE, e))
    };
    let mut w = Writer::default();
    let imports = E::imports(&module);
    w.u32(imports.len() as u32);
    for import in &imports {
        w.str(&import.module);
        w.str(&import.name);
        described(&import.desc, &mut w)?;
    }
    let exports = E::exports(&module);
    w.u32(exports.len() as u32);
    for export in &exports {
        w.str(&export.name);
        described(&export.desc, &mut w)?;
    }
    let mut state = E::state().lock();
    state.running = None;
    state.started = false;
    state.loaded = Some(Loaded { module, fuel });
    Ok(w.0)
}

/// `instantiate(config)`: links the imports and instantiates (running the start function).
///
/// Config: `hl_wasi::InstantiateRequest`.
pub fn instantiate<E: Engine>(config: Vec<u8>) -> Result<(), GuestError> {
    let req = InstantiateRequest::parse(&config).map_err(|e| state_error(&e.to_string()))?;
    let mut state = E::state().lock();
    state.running = None;
    state.started = false;
    let Some(loaded) = state.loaded.as_ref() else {
        return Err(state_error("no module loaded"));
    };
    let wasi_on = req.wasi.is_some();
    let mut linker = E::linker(&loaded.module);
    let mut defined = alloc::collections::BTreeSet::new();
    for (index, import) in E::imports(&loaded.module).into_iter().enumerate() {
        let (module, name) = (&import.module, &import.name);
        let Some(ty) = import.func else {
            return Err(GuestError::new(
                code::LINK,
                format!("import {module}.{name}: only function imports are supported"),
            ));
        };
        if !defined.insert((module.clone(), name.clone())) {
            continue; // The same name imported twice: one definition serves both.
        }
        if wasi_on && module == "wasi_snapshot_preview1" {
            E::define_wasi(&mut linker, name, ty).map_err(|e| GuestError::new(code::LINK, e))?;
            continue;
        }
        E::define_import(&mut linker, module, name, ty, index as u32)
            .map_err(|e| GuestError::new(code::LINK, e))?;
    }
    let limits = Limits {
        max_memory: req.max_memory,
        max_table: req.max_table,
    };
    wasi_host::discard_output();
    let mut instance = E::instantiate(linker, &loaded.module, limits, req.wasi, loaded.fuel);
    // As at the end of a call: a deferred seek and unread stdin go back to the host, and the start
    // function's output crosses before the reply, whether it returned or trapped.
    if let Ok(run) = instance.as_mut()
        && let Some(wasi) = E::wasi(run)
    {
        wasi.end_call(&mut wasi_host::HlHost);
    }
    wasi_host::flush_all();
    state.running = Some(instance.map_err(|e| run_error::<E>(e, code::LINK))?);
    Ok(())
}

/// A call from the module to an imported (host) function: `wasm_import(index, args)`. The
/// result's values are decoded as `results`; an error is the host function's failure (the
/// engine carries it as its host error: [`Failure::Host`]).
pub fn host_import(index: u32, results: &[ValKind], params: &[Val]) -> Result<Vec<Val>, String> {
    // The host function sees the output the module wrote before calling it, and its files as
    // the module left them.
    wasi_host::flush_all();
    let args = write_vals(params);
    match call_host("wasm_import", &[Value::U32(index), Value::Bytes(args)]) {
        Ok(Value::Bytes(bytes)) => {
            read_vals(&bytes, results).map_err(|e| format!("bad host result: {e}"))
        }
        Ok(other) => Err(format!(
            "wasm_import returned {} instead of bytes",
            other.value_type()
        )),
        Err(HostError::Failed(message)) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// Maps an error of a running module: exit, trap, host failure; anything else gets `other`
/// (`LINK` while instantiating, else the `other` trap).
fn run_error<E: Engine>(e: E::Error, other: u32) -> GuestError {
    match E::failure(e) {
        Failure::Exit(status) => GuestError::new(code::EXIT, status.to_string()),
        Failure::Trap { index, message } => GuestError::new(code::TRAP_BASE + index, message),
        Failure::Host(message) => GuestError::new(code::TRAP_BASE + trap::HOST, message),
        Failure::Other(message) if other == code::LINK => GuestError::new(code::LINK, message),
        Failure::Other(message) => GuestError::new(code::TRAP_BASE + trap::OTHER, message),
    }
}

fn running<E: Engine>(state: &mut State<E>) -> Result<&mut E::Instance, GuestError> {
    running_in::<E::Instance>(&mut state.running)
}

fn running_in<I>(running: &mut Option<I>) -> Result<&mut I, GuestError> {
    running
        .as_mut()
        .ok_or_else(|| state_error("no module instantiated"))
}

fn refuel<E: Engine>(state: &mut State<E>) -> Result<(), GuestError> {
    let fuel = state.loaded.as_ref().and_then(|l| l.fuel);
    if let (Some(fuel), Some(run)) = (fuel, state.running.as_mut()) {
        E::set_fuel(run, fuel).map_err(|e| state_error(&e))?;
    }
    Ok(())
}

fn export_func<E: Engine>(run: &mut E::Instance, name: &str) -> Result<E::Func, GuestError> {
    E::func(run, name)
        .ok_or_else(|| GuestError::new(code::NO_EXPORT, format!("no exported function \"{name}\"")))
}

/// Calls `func`, refusing first (before any side effect) a function whose results cannot cross.
fn call<E: Engine>(
    run: &mut E::Instance,
    func: E::Func,
    sig: &FuncSig,
    params: &[Val],
) -> Result<Vec<Val>, GuestError> {
    if !sig.results.iter().all(|t| t.crosses()) {
        return Err(GuestError::new(code::BAD_ARGS, CANNOT_CROSS));
    }
    E::call(run, func, params, &sig.results).map_err(|e| run_error::<E>(e, 0))
}

/// At the end of every export that ran Wasm code, whether it returned or trapped: sends the
/// buffered stdout/stderr output (`wasi_host::flush_output`) and gives stdin's unread read-ahead
/// back to the host (`hl_wasi::WasiCtx::end_call`; one exit each, only when there is some), so
/// no output or input waits in the guest between calls, where a snapshot or a restore's rewind
/// could find it.
fn after_call<E: Engine, T>(result: T) -> T {
    if let Some(run) = E::state().lock().running.as_mut()
        && let Some(wasi) = E::wasi(run)
    {
        wasi.end_call(&mut wasi_host::HlHost);
    }
    wasi_host::flush_all();
    result
}

/// At the start of every export that runs Wasm code: output left by an interrupted call is
/// dropped (`wasi_host::discard_output`), never delivered as a later call's.
fn before_call() {
    wasi_host::discard_output();
}

/// `invoke(name, args)`: calls an exported function with packed arguments, returns the packed
/// results.
pub fn invoke<E: Engine>(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    before_call();
    after_call::<E, _>(invoke_module::<E>(name, args))
}

fn invoke_module<E: Engine>(name: String, args: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = E::state().lock();
    refuel(&mut state)?;
    let state = &mut *state;
    let run = running_in(&mut state.running)?;
    let func = export_func::<E>(run, &name)?;
    let sig = E::func_sig(run, func);
    let params = read_vals(&args, &sig.params).map_err(|e| GuestError::new(code::BAD_ARGS, e))?;
    if name == "_start" {
        // A raw entry (PySandbox re-enters `_start` this way after a restore to a state taken
        // after it): not refused, but a later `run_wasi` without a restore is.
        state.started = true;
    }
    let results = call::<E>(run, func, &sig, &params)?;
    Ok(write_vals(&results))
}

/// Why `run_wasi` refuses an instance whose `_start` already ran.
pub const ALREADY_STARTED: &str = "_start already ran in this instance: a run with its own WASI \
     context needs a sandbox restored to a snapshot taken before _start (or a new one)";

/// The `run_wasi` request: this run's WASI context (docs/wasm.md, "Wire encodings"): u8 flags
/// (bit 0 args, bit 1 env, bit 2 seed); when set, u32 count + `bytes` each for args, the same
/// for env (`KEY=VALUE`), 32 bytes of random seed. Host input: bounded by its bytes.
struct RunRequest {
    args: Option<Vec<Vec<u8>>>,
    env: Option<Vec<Vec<u8>>>,
    seed: Option<[u8; 32]>,
}

fn parse_run_request(config: &[u8]) -> Result<RunRequest, GuestError> {
    parse_config(config, |r| {
        let flags = r.u8()?;
        if flags & !0b111 != 0 {
            return Err(DecodeError::UnknownTag(flags));
        }
        let args = if flags & 1 != 0 {
            Some(read_list(r)?)
        } else {
            None
        };
        let env = if flags & 2 != 0 {
            Some(read_list(r)?)
        } else {
            None
        };
        let seed = if flags & 4 != 0 {
            Some(read_seed(r)?)
        } else {
            None
        };
        Ok(RunRequest { args, env, seed })
    })
}

/// `run_wasi(config)`: runs the WASI command's `_start` with this run's args, env and random
/// seed (each replacing the instantiate's when given), once per instance: an instance whose
/// `_start` already ran is refused (`BAD_ARGS`, before any of the module's code runs) — restore
/// it to a snapshot taken before `_start`. The reply is empty; `proc_exit` is `EXIT` as for
/// `invoke`.
pub fn run_wasi<E: Engine>(config: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    before_call();
    after_call::<E, _>(run_wasi_module::<E>(config))
}

fn run_wasi_module<E: Engine>(config: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let req = parse_run_request(&config)?;
    let mut state = E::state().lock();
    if state.started {
        return Err(GuestError::new(code::BAD_ARGS, ALREADY_STARTED));
    }
    refuel(&mut state)?;
    let state = &mut *state;
    let run = running_in(&mut state.running)?;
    let func = export_func::<E>(run, "_start")?;
    let sig = E::func_sig(run, func);
    if !sig.params.is_empty() || !sig.results.is_empty() {
        return Err(GuestError::new(
            code::BAD_ARGS,
            "_start must have type () -> ()",
        ));
    }
    let Some(wasi) = E::wasi(run) else {
        return Err(GuestError::new(
            code::BAD_ARGS,
            "WASI is off for this module: no WASI context to set",
        ));
    };
    if let Some(args) = req.args {
        wasi.args = args;
    }
    if let Some(env) = req.env {
        wasi.env = env;
    }
    if let Some(seed) = req.seed {
        wasi.rng = hl_wasi::ChaCha20::new(&seed);
    }
    state.started = true;
    call::<E>(run, func, &sig, &[])?;
    Ok(Vec::new())
}

fn memory<E: Engine>(run: &mut E::Instance) -> Result<&mut [u8], GuestError> {
    E::memory(run).ok_or_else(|| {
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
fn alloc_and_write<E: Engine>(run: &mut E::Instance, data: &[u8]) -> Result<u32, GuestError> {
    let alloc = export_func::<E>(run, "alloc")?;
    let sig = E::func_sig(run, alloc);
    if sig.params != [ValKind::I32] || sig.results != [ValKind::I32] {
        return Err(GuestError::new(
            code::BAD_ARGS,
            "alloc must have type (i32) -> i32",
        ));
    }
    let out = call::<E>(run, alloc, &sig, &[Val::I32(data.len() as i32)])?;
    let Some(&Val::I32(ptr)) = out.first() else {
        return Err(GuestError::new(
            code::BAD_ARGS,
            "alloc must have type (i32) -> i32",
        ));
    };
    let bytes = memory::<E>(run)?;
    let range = mem_range(bytes.len(), u64::from(ptr as u32), data.len() as u64)?;
    bytes[range].copy_from_slice(data);
    Ok(ptr as u32)
}

/// `call_bytes(name, input)`: the bytes convention (docs/wasm.md): `alloc(len) -> ptr`, copy
/// the input, call `name(ptr, len)` whose result is `(ptr, len)` (two i32s) or one i64
/// `ptr << 32 | len`, copy the output, then `dealloc(ptr, len)` on it when exported.
pub fn call_bytes<E: Engine>(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    before_call();
    after_call::<E, _>(call_bytes_module::<E>(name, input))
}

fn call_bytes_module<E: Engine>(name: String, input: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    let mut state = E::state().lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    let func = export_func::<E>(run, &name)?;
    let sig = E::func_sig(run, func);
    if sig.params != [ValKind::I32, ValKind::I32] {
        return Err(GuestError::new(
            code::BAD_ARGS,
            format!("{name} must take (i32 ptr, i32 len) for the bytes convention"),
        ));
    }
    let ptr = alloc_and_write::<E>(run, &input)?;
    let results = call::<E>(
        run,
        func,
        &sig,
        &[Val::I32(ptr as i32), Val::I32(input.len() as i32)],
    )?;
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
    let bytes = memory::<E>(run)?;
    let range = mem_range(bytes.len(), u64::from(out_ptr), u64::from(out_len))?;
    let output = bytes[range].to_vec();
    if let Some(dealloc) = E::func(run, "dealloc") {
        let sig = E::func_sig(run, dealloc);
        call::<E>(
            run,
            dealloc,
            &sig,
            &[Val::I32(out_ptr as i32), Val::I32(out_len as i32)],
        )?;
    }
    Ok(output)
}

/// `write_alloc(data)`: `alloc(len)`, copy, return the pointer.
pub fn write_alloc<E: Engine>(data: Vec<u8>) -> Result<u32, GuestError> {
    before_call();
    after_call::<E, _>(write_alloc_module::<E>(data))
}

fn write_alloc_module<E: Engine>(data: Vec<u8>) -> Result<u32, GuestError> {
    let mut state = E::state().lock();
    refuel(&mut state)?;
    let run = running(&mut state)?;
    alloc_and_write::<E>(run, &data)
}

/// `read_memory(ptr, len)`: bytes of the exported memory.
pub fn read_memory<E: Engine>(ptr: u64, len: u32) -> Result<Vec<u8>, GuestError> {
    let mut state = E::state().lock();
    let bytes = memory::<E>(running(&mut state)?)?;
    let range = mem_range(bytes.len(), ptr, u64::from(len))?;
    Ok(bytes[range].to_vec())
}

/// `write_memory(ptr, data)`: writes into the exported memory.
pub fn write_memory<E: Engine>(ptr: u64, data: Vec<u8>) -> Result<(), GuestError> {
    let mut state = E::state().lock();
    let bytes = memory::<E>(running(&mut state)?)?;
    let range = mem_range(bytes.len(), ptr, data.len() as u64)?;
    bytes[range].copy_from_slice(&data);
    Ok(())
}

/// Size of the exported `memory` in bytes.
pub fn memory_size<E: Engine>() -> Result<u64, GuestError> {
    let mut state = E::state().lock();
    Ok(memory::<E>(running(&mut state)?)?.len() as u64)
}

/// Fuel consumed by the last call (0 when metering is off).
pub fn fuel_consumed<E: Engine>() -> Result<u64, GuestError> {
    let mut state = E::state().lock();
    let fuel = state.loaded.as_ref().and_then(|l| l.fuel);
    let run = running(&mut state)?;
    match fuel {
        Some(total) => Ok(total.saturating_sub(E::fuel(run).unwrap_or(0))),
        None => Ok(0),
    }
}
