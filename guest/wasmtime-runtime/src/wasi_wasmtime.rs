//! The wasmtime adapter of the engine-independent WASI code (the `hl-wasi` crate), the
//! counterpart of the wasmi guest's `wasi_wasmi.rs`: defines each `wasi_snapshot_preview1`
//! import the module has in a wasmtime `Linker`, converting values, charging fuel, and turning
//! `proc_exit` into [`ExitStatus`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hl_wasi::{self as wasi, Func, GuestMemory, Outcome, SliceMemory, Ty};
use wasmtime::{Caller, Error, Extern, FuncType, Linker, Trap, Val, ValType};

use crate::{ExitStatus, HostState};
use hl_wasm_service::wasi_host::HlHost;

/// Defines the import `wasi_snapshot_preview1.<name>` of type `ty` in `linker`.
pub fn define(linker: &mut Linker<HostState>, name: &str, ty: FuncType) -> Result<(), String> {
    let params: Vec<ValType> = ty.params().collect();
    let results: Vec<ValType> = ty.results().collect();
    let which = match wasi::lookup(name) {
        Some((f, want_params, want_results)) => {
            if !same(&params, want_params) || !same(&results, want_results) {
                return Err(format!(
                    "import wasi_snapshot_preview1.{name} has type {params:?} -> {results:?}, WASI says {want_params:?} -> {want_results:?}"
                ));
            }
            f
        }
        None if results.len() == 1 && matches!(results[0], ValType::I32) => Func::NoSys,
        None => {
            return Err(format!(
                "import wasi_snapshot_preview1.{name} is not supported (and does not return an errno)"
            ));
        }
    };
    linker
        .func_new(
            "wasi_snapshot_preview1",
            name,
            ty,
            move |caller, params, out| {
                let errno = call(which, caller, params)?;
                if let Some(r) = out.first_mut() {
                    *r = Val::I32(errno);
                }
                Ok(())
            },
        )
        .map_err(|e| format!("{e}"))?;
    Ok(())
}

fn same(engine: &[ValType], wasi: &[Ty]) -> bool {
    engine.len() == wasi.len()
        && engine
            .iter()
            .zip(wasi)
            .all(|(a, b)| matches!((a, b), (ValType::I32, Ty::I32) | (ValType::I64, Ty::I64)))
}

fn call(f: Func, mut caller: Caller<'_, HostState>, params: &[Val]) -> wasmtime::Result<i32> {
    let args: Vec<u64> = params
        .iter()
        .map(|v| match v {
            Val::I32(x) => u64::from(*x as u32),
            Val::I64(x) => *x as u64,
            _ => 0,
        })
        .collect();
    charge_fuel(&mut caller, wasi::fuel_units(f, &args))?;
    let memory = if wasi::needs_memory(f) {
        caller.get_export("memory").and_then(Extern::into_memory)
    } else {
        None
    };
    let (mem, state): (Option<&mut [u8]>, &mut HostState) = match memory {
        Some(m) => {
            let (data, state) = m.data_and_store_mut(&mut caller);
            (Some(data), state)
        }
        None => (None, caller.data_mut()),
    };
    // WASI imports are defined only when the instantiate request enabled WASI.
    let Some(ctx) = state.wasi.as_mut() else {
        return Ok(wasi::abi::errno::NOSYS);
    };
    let mut slice = mem.map(SliceMemory);
    let mem = slice.as_mut().map(|m| m as &mut dyn GuestMemory);
    match wasi::call(f, ctx, mem, &mut HlHost, &args) {
        Outcome::Errno(e) => Ok(e),
        Outcome::Exit(code) => Err(Error::new(ExitStatus(code))),
    }
}

/// Charges `units` of fuel; out of fuel traps `out_of_fuel`. Without metering, nothing to charge.
fn charge_fuel(caller: &mut Caller<'_, HostState>, units: u64) -> wasmtime::Result<()> {
    if units == 0 {
        return Ok(());
    }
    let Ok(fuel) = caller.get_fuel() else {
        return Ok(());
    };
    if fuel < units {
        let _ = caller.set_fuel(0);
        return Err(Error::from(Trap::OutOfFuel));
    }
    caller.set_fuel(fuel - units)
}
