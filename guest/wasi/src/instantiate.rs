//! The `instantiate(config)` request both Wasm runtime guests take (docs/wasm.md, "Wire
//! encodings"): u64 max memory bytes (0: none), u64 max table elements (0: none), u8 WASI on; when
//! on: u32 argc + `bytes` each, u32 envc + `bytes` each (`KEY=VALUE`), 32 bytes random seed, u32
//! preopen count + `bytes` each (the guest names of fds 3, 4, ...). Host input: every count is
//! bounded by the bytes it must be followed by.

use alloc::vec::Vec;

use hl_wire::{DecodeError, Reader};

use crate::{ChaCha20, Preopen, WasiCtx};

/// A u32 count and that many `bytes` (args, env or preopen names), as `instantiate` and
/// wasm-service's `run_wasi` encode them. The count is bounded by the bytes that must follow it.
pub fn read_list(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.blob()?.to_vec());
    }
    Ok(out)
}

/// The 32-byte random seed of a WASI context (`instantiate`, `run_wasi`).
pub fn read_seed(r: &mut Reader<'_>) -> Result<[u8; 32], DecodeError> {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(r.take(32)?);
    Ok(seed)
}

/// A parsed `instantiate` request.
pub struct InstantiateRequest {
    /// Most bytes a linear memory may have (0: no limit).
    pub max_memory: u64,
    /// Most elements a table may have (0: no limit).
    pub max_table: u64,
    /// The WASI configuration, when WASI is on.
    pub wasi: Option<WasiCtx>,
}

impl InstantiateRequest {
    /// Parses `config`; any malformed or trailing byte is an error.
    pub fn parse(config: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(config);
        let max_memory = r.u64()?;
        let max_table = r.u64()?;
        let wasi = if r.u8()? != 0 {
            let args = read_list(&mut r)?;
            let env = read_list(&mut r)?;
            let seed = read_seed(&mut r)?;
            let preopens = read_list(&mut r)?
                .into_iter()
                .map(|name| Preopen { name, open: true })
                .collect();
            Some(WasiCtx {
                args,
                env,
                rng: ChaCha20::new(&seed),
                preopens,
                stdin: Default::default(),
                known: Default::default(),
            })
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            max_memory,
            max_table,
            wasi,
        })
    }
}
