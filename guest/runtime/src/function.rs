//! Guest function registration: conversions between Rust types and wire values, and the
//! `GuestFn` trait that turns an ordinary Rust function into a table entry.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hl_wire::{MAX_FUNCTIONS, MAX_NAME_LEN, MAX_PARAMS, Value, ValueType, error_code};

use crate::host::HostError;

/// An error a guest function returns: becomes an ERROR frame with this code and message.
///
/// Codes 1-3 are the ABI's (unknown function, bad arguments, host call failed); a guest's own
/// codes should be >= 1000. The code is passed through as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestError {
    pub code: u32,
    pub message: String,
}

impl GuestError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}: {}", self.code, self.message)
    }
}

/// A failed host call propagated by a guest function (`?`): ERROR code 3, with the host's
/// message when the host reported the failure.
impl From<HostError> for GuestError {
    fn from(e: HostError) -> Self {
        Self::new(error_code::HOST_CALL_FAILED, e.message())
    }
}

/// A Rust type that can be built from a wire value (parameters, host call results).
pub trait FromValue: Sized {
    const TYPE: ValueType;
    /// `None` when `v` has another type.
    fn from_value(v: Value) -> Option<Self>;
}

/// A Rust type that can be turned into a wire value (results, host call arguments).
pub trait IntoValue {
    const TYPE: ValueType;
    fn into_value(self) -> Value;
}

macro_rules! value_conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl FromValue for $t {
            const TYPE: ValueType = ValueType::$variant;
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$variant(x) => Some(x),
                    _ => None,
                }
            }
        }
        impl IntoValue for $t {
            const TYPE: ValueType = ValueType::$variant;
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
        }
    )*};
}

value_conversions! {
    i32 => I32, u32 => U32, i64 => I64, u64 => U64, f32 => F32, f64 => F64, bool => Bool,
    String => String, Vec<u8> => Bytes,
}

/// `()` is void. (Allowed as a host call result; rejected as a parameter at compile time.)
impl FromValue for () {
    const TYPE: ValueType = ValueType::Void;
    fn from_value(v: Value) -> Option<Self> {
        matches!(v, Value::Void).then_some(())
    }
}

impl IntoValue for () {
    const TYPE: ValueType = ValueType::Void;
    fn into_value(self) -> Value {
        Value::Void
    }
}

/// What a guest function may return: a value (`T: IntoValue`) or `Result<T, GuestError>`.
pub trait IntoOutcome {
    const TYPE: ValueType;
    fn into_outcome(self) -> Result<Value, GuestError>;
}

macro_rules! outcome_for_values {
    ($($t:ty),*) => {$(
        impl IntoOutcome for $t {
            const TYPE: ValueType = <$t as IntoValue>::TYPE;
            fn into_outcome(self) -> Result<Value, GuestError> {
                Ok(self.into_value())
            }
        }
    )*};
}

outcome_for_values!((), i32, u32, i64, u64, f32, f64, bool, String, Vec<u8>);

impl<T: IntoOutcome> IntoOutcome for Result<T, GuestError> {
    const TYPE: ValueType = T::TYPE;
    fn into_outcome(self) -> Result<Value, GuestError> {
        self.and_then(IntoOutcome::into_outcome)
    }
}

/// A Rust function usable as a guest function; implemented for `fn(A, B, ...) -> R` with up to
/// 16 parameters of [`FromValue`] types and an [`IntoOutcome`] result. `Args` is the parameter
/// tuple (inferred).
pub trait GuestFn<Args>: Copy + 'static {
    const PARAMS: &'static [ValueType];
    const RESULT: ValueType;
    /// Converts the arguments (already checked against `PARAMS` by the dispatcher) and calls.
    fn invoke(self, args: Vec<Value>) -> Result<Value, GuestError>;
}

fn bad_argument() -> GuestError {
    GuestError::new(error_code::BAD_ARGUMENTS, "argument type mismatch")
}

macro_rules! impl_guest_fn {
    ($($arg:ident),*) => {
        impl<F, R, $($arg),*> GuestFn<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R + Copy + 'static,
            R: IntoOutcome,
            $($arg: FromValue,)*
        {
            const PARAMS: &'static [ValueType] = &[$($arg::TYPE),*];
            const RESULT: ValueType = R::TYPE;

            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn invoke(self, args: Vec<Value>) -> Result<Value, GuestError> {
                let mut args = args.into_iter();
                $(let $arg = args.next().and_then($arg::from_value).ok_or_else(bad_argument)?;)*
                self($($arg),*).into_outcome()
            }
        }
    };
}

impl_guest_fn!();
impl_guest_fn!(A1);
impl_guest_fn!(A1, A2);
impl_guest_fn!(A1, A2, A3);
impl_guest_fn!(A1, A2, A3, A4);
impl_guest_fn!(A1, A2, A3, A4, A5);
impl_guest_fn!(A1, A2, A3, A4, A5, A6);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13);
impl_guest_fn!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14);
impl_guest_fn!(
    A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15
);
impl_guest_fn!(
    A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16
);

/// One entry of the guest's function table (built by [`crate::guest_functions!`]).
#[derive(Clone, Copy)]
pub struct GuestFunction {
    pub name: &'static str,
    pub params: &'static [ValueType],
    pub result: ValueType,
    pub call: fn(Vec<Value>) -> Result<Value, GuestError>,
}

impl GuestFunction {
    /// Describes `f` (types from its signature) under `name`; `call` must invoke `f`.
    pub const fn new<F: GuestFn<A>, A>(
        name: &'static str,
        _f: &F,
        call: fn(Vec<Value>) -> Result<Value, GuestError>,
    ) -> Self {
        let params = F::PARAMS;
        let mut i = 0;
        while i < params.len() {
            if matches!(params[i], ValueType::Void) {
                panic!("a guest function parameter cannot be () (void)");
            }
            i += 1;
        }
        Self {
            name,
            params,
            result: F::RESULT,
            call,
        }
    }
}

/// Byte equality usable in `const` checks (`==` on slices is not `const`).
pub(crate) const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Compile-time check of the ABI's limits: at most 4096 functions, names 1-255 bytes and
/// unique, at most 32 parameters.
pub const fn validate_table(table: &[GuestFunction]) {
    assert!(
        table.len() <= MAX_FUNCTIONS,
        "more than 4096 guest functions"
    );
    let mut i = 0;
    while i < table.len() {
        let name = table[i].name.as_bytes();
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME_LEN,
            "guest function names must be 1-255 bytes"
        );
        assert!(
            table[i].params.len() <= MAX_PARAMS,
            "more than 32 parameters"
        );
        let mut j = 0;
        while j < i {
            assert!(
                !same_bytes(table[j].name.as_bytes(), name),
                "duplicate guest function name"
            );
            j += 1;
        }
        i += 1;
    }
}
