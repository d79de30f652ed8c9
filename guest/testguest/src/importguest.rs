//! A guest that declares its host imports (`hl_guest::host_functions!`), for the host's
//! create-time check (tests/kvm/host_imports.test.ts): the host must provide `now_ms`,
//! `scale`, `note` and `math.double` with exactly these types, or `Sandbox.create` fails.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use hl_guest::GuestError;

hl_guest::host_functions! {
    /// Milliseconds from the host's clock.
    fn now_ms() -> u64;
    /// `x` times `factor`, computed by the host.
    fn scale(x: i32, factor: f64) -> f64;
    /// A void host function taking a string and bytes.
    fn note(text: String, data: Vec<u8>);
    /// A host name that is not a Rust identifier.
    fn double(x: i32) -> i32 => "math.double";
}

hl_guest::guest_functions![stamp, scaled, noted, doubled, add];

/// The host's `now_ms()`.
fn stamp() -> Result<u64, GuestError> {
    Ok(now_ms()?)
}

/// The host's `scale(x, factor)`.
fn scaled(x: i32, factor: f64) -> Result<f64, GuestError> {
    Ok(scale(x, factor)?)
}

/// Sends `text` and its bytes reversed to the host's `note`; returns the text's length.
fn noted(text: String) -> Result<u32, GuestError> {
    let len = text.len() as u32;
    let data: Vec<u8> = text.bytes().rev().collect();
    note(text, data)?;
    Ok(len)
}

/// The host's `math.double(x)`.
fn doubled(x: i32) -> Result<i32, GuestError> {
    Ok(double(x)?)
}

/// Calls no host function.
fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}
