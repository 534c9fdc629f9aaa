//! Plumbing for the few functions written as plain version-1 C functions
//! rather than `#[pg_extern]`: the per-row hot paths (the bare policy
//! helpers, `encrypt(text)`, `decrypt`). pgrx's generic wrapper (memory
//! context switch, argument conversion, result boxing) costs more per call
//! than what they do. They still run under `#[pg_guard]`, so a panic or a
//! raised error becomes a PostgreSQL ERROR. Their SQL declarations are
//! written by hand in `sql/helpers.sql`.

use pgrx::prelude::*;
use pgrx::varlena;

/// Argument `i` of a call, or `None` when it is NULL or not passed.
///
/// # Safety
/// `fcinfo` is the current call's; argument `i`, if passed, is a
/// text/bytea (varlena) datum. The slice lives as long as the call.
pub unsafe fn varlena_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, i: usize) -> Option<&'a [u8]> {
    // SAFETY: see the function's contract; detoasting (only when stored
    // compressed or out of line) pallocs in the call's memory context.
    unsafe {
        let nargs = (*fcinfo).nargs as usize;
        if i >= nargs {
            return None;
        }
        let arg = &(*fcinfo).args.as_slice(nargs)[i];
        if arg.isnull {
            return None;
        }
        let mut value = arg.value.cast_mut_ptr::<pg_sys::varlena>();
        if varlena::varatt_is_4b_c(value) || varlena::varatt_is_1b_e(value) {
            value = pg_sys::pg_detoast_datum_packed(value);
        }
        Some(std::slice::from_raw_parts(
            varlena::vardata_any(value).cast::<u8>(),
            varlena::varsize_any_exhdr(value),
        ))
    }
}

/// Returns SQL NULL from a call.
///
/// # Safety
/// `fcinfo` is the current call's.
pub unsafe fn return_null(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: see the function's contract.
    unsafe { (*fcinfo).isnull = true };
    pg_sys::Datum::from(0)
}

/// The largest varlena payload PostgreSQL can allocate.
pub const MAX_VARLENA_DATA: usize = (1 << 30) - 1 - pg_sys::VARHDRSZ;

/// A new varlena (text or bytea) of `len` data bytes in the current memory
/// context, and its data area to fill (uninitialized bytes zeroed).
///
/// # Safety
/// Call inside a function call, where palloc is allowed; `len` is at most
/// [`MAX_VARLENA_DATA`] (palloc raises otherwise).
pub unsafe fn new_varlena<'a>(len: usize) -> (*mut pg_sys::varlena, &'a mut [u8]) {
    // SAFETY: palloc returns a fresh, suitably aligned block or raises.
    unsafe {
        let total = pg_sys::VARHDRSZ + len;
        let ptr = pg_sys::palloc(total).cast::<pg_sys::varlena>();
        varlena::set_varsize_4b(ptr, total as i32);
        let data = ptr.cast::<u8>().add(pg_sys::VARHDRSZ);
        data.write_bytes(0, len);
        (ptr, std::slice::from_raw_parts_mut(data, len))
    }
}

/// The version-1 calling convention records the function manager asks for
/// (`PG_FUNCTION_INFO_V1`).
macro_rules! v1_function_info {
    ($($finfo:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    )*};
}
pub(crate) use v1_function_info;
