//! The JSON values of audit entries, built as `jsonb` without a text round
//! trip.
//!
//! A row becomes `to_jsonb(row)` (PostgreSQL's own conversion: every type
//! rendered in JSON as SQL renders it, the same value the row_to_json text
//! it replaced gave through `jsonb_in`); the row key, the changed columns of
//! an UPDATE and redactions are cut from it with the `jsonb` iterator API.
//! Everything is allocated in the current memory context (a trigger's
//! per-row context).
//!
//! The MAC of an entry covers each value's `jsonb` text output
//! ([`text`]): what `value::text` gives on verify, after any number of
//! dump and restore cycles (`jsonb_out(jsonb_in(t)) = t` for that text).

use crate::backend::BackendLocal;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::c_char;
use std::ptr::null_mut;

/// What a redacted value is recorded as.
const REDACTED: &str = "[redacted]";

/// `to_jsonb(anyelement)` call set-ups, one per row type, built once per
/// backend in their own memory context (reset if it ever holds many).
struct Calls {
    context: pg_sys::MemoryContext,
    by_type: Vec<(pg_sys::Oid, *mut pg_sys::FmgrInfo)>,
}

static CALLS: BackendLocal<RefCell<Option<Calls>>> = BackendLocal::new(RefCell::new(None));

/// Row types whose set-up is kept before the context is reset.
const MAX_CALLS: usize = 64;

/// The `to_jsonb` call for values of `row_type`. to_jsonb(anyelement) reads
/// its argument's type from the call expression in flinfo: a FuncExpr over
/// a NULL constant of the row type says it (the type is all it keeps; a
/// composite's columns are read from the value's own header).
fn to_jsonb_call(row_type: pg_sys::Oid) -> *mut pg_sys::FmgrInfo {
    let mut calls = CALLS.borrow_mut();
    let calls = calls.get_or_insert_with(|| Calls {
        // SAFETY: a context of our own under TopMemoryContext, for good.
        context: unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"pg_warden to_jsonb calls".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        },
        by_type: Vec::new(),
    });
    if let Some((_, call)) = calls.by_type.iter().find(|(t, _)| *t == row_type) {
        return *call;
    }
    if calls.by_type.len() >= MAX_CALLS {
        calls.by_type.clear();
        // SAFETY: nothing points into it any more.
        unsafe { pg_sys::MemoryContextReset(calls.context) };
    }
    // SAFETY: allocations in our context; lookups of a built-in function
    // and a type (they raise on a missing one, before anything is cached).
    let call = unsafe {
        let old = pg_sys::MemoryContextSwitchTo(calls.context);
        let flinfo =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info_cxt(pg_sys::Oid::from(pg_sys::F_TO_JSONB), flinfo, calls.context);
        let arg = pg_sys::makeNullConst(row_type, -1, pg_sys::InvalidOid);
        (*flinfo).fn_expr = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_TO_JSONB),
            pg_sys::JSONBOID,
            pg_sys::lappend(null_mut(), arg.cast()),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        )
        .cast();
        pg_sys::MemoryContextSwitchTo(old);
        flinfo
    };
    calls.by_type.push((row_type, call));
    call
}

/// `to_jsonb(<row>)` of a trigger's tuple.
///
/// # Safety
/// `tuple` must be a valid tuple of `desc`, a relation's row type.
pub unsafe fn row(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> *mut pg_sys::Jsonb {
    // SAFETY: as the caller's; the call set-up is for this row type. Not
    // borrowed across the call (to_jsonb can raise).
    unsafe {
        let call = to_jsonb_call((*desc).tdtypeid);
        let datum = pg_sys::heap_copy_tuple_as_datum(tuple, desc);
        pg_sys::FunctionCall1Coll(call, pg_sys::InvalidOid, datum).cast_mut_ptr()
    }
}

fn string(s: &str) -> pg_sys::JsonbValue {
    // SAFETY: an all-zero JsonbValue is a valid (null) value to fill in.
    let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    v.type_ = pg_sys::jbvType::jbvString;
    v.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
        len: s.len() as i32,
        val: s.as_ptr() as *mut c_char,
    };
    v
}

/// Builds an object from `(key, value)` members (pointers valid until the
/// call returns); jsonb sorts them.
struct Builder(*mut pg_sys::JsonbParseState);

impl Builder {
    fn new() -> Builder {
        let mut b = Builder(null_mut());
        // SAFETY: starts a parse state in the current memory context.
        unsafe {
            pg_sys::pushJsonbValue(
                &mut b.0,
                pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
                null_mut(),
            )
        };
        b
    }

    fn member(&mut self, key: &mut pg_sys::JsonbValue, value: &mut pg_sys::JsonbValue) {
        // SAFETY: an open object; a key string and a scalar or binary value.
        unsafe {
            pg_sys::pushJsonbValue(&mut self.0, pg_sys::JsonbIteratorToken::WJB_KEY, key);
            pg_sys::pushJsonbValue(&mut self.0, pg_sys::JsonbIteratorToken::WJB_VALUE, value);
        }
    }

    fn finish(mut self) -> *mut pg_sys::Jsonb {
        // SAFETY: closes the object opened by new().
        unsafe {
            let done = pg_sys::pushJsonbValue(
                &mut self.0,
                pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
                null_mut(),
            );
            pg_sys::JsonbValueToJsonb(done)
        }
    }
}

/// The key's text of a jsonb object key.
///
/// # Safety
/// `key` must be a string value.
unsafe fn key_str(key: &pg_sys::JsonbValue) -> &[u8] {
    // SAFETY: as the caller's.
    unsafe { std::slice::from_raw_parts(key.val.string.val.cast(), key.val.string.len as usize) }
}

fn is_redacted(key: &[u8], redact: &[String]) -> bool {
    redact.iter().any(|r| r.as_bytes() == key)
}

/// The object of `row`'s members named in `keys` (a missing one as null,
/// a redacted one as redacted): a row key.
///
/// # Safety
/// `row` must be a jsonb object.
pub unsafe fn pick(
    row: *mut pg_sys::Jsonb,
    keys: &[String],
    redact: &[String],
) -> *mut pg_sys::Jsonb {
    let mut out = Builder::new();
    for key in keys {
        let mut k = string(key);
        let mut v = if is_redacted(key.as_bytes(), redact) {
            string(REDACTED)
        } else {
            // SAFETY: a lookup in an object; NULL when absent.
            let found = unsafe {
                pg_sys::getKeyJsonValueFromContainer(
                    &mut (*row).root,
                    key.as_ptr().cast(),
                    key.len() as i32,
                    null_mut(),
                )
            };
            if found.is_null() {
                // SAFETY: all-zero is jbvNull.
                unsafe { std::mem::zeroed() }
            } else {
                // SAFETY: just returned, palloc'd.
                unsafe { *found }
            }
        };
        out.member(&mut k, &mut v);
    }
    out.finish()
}

/// `row` with its redacted members replaced (itself when none are).
///
/// # Safety
/// `row` must be a jsonb object.
pub unsafe fn redacted(row: *mut pg_sys::Jsonb, redact: &[String]) -> *mut pg_sys::Jsonb {
    if redact.is_empty() {
        return row;
    }
    let mut out = Builder::new();
    // SAFETY: iterates an object's members (nested values as binary).
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(&mut (*row).root);
        let (mut k, mut v): (pg_sys::JsonbValue, pg_sys::JsonbValue) =
            (std::mem::zeroed(), std::mem::zeroed());
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut k, true) {
                pg_sys::JsonbIteratorToken::WJB_KEY => {
                    pg_sys::JsonbIteratorNext(&mut it, &mut v, true);
                    if is_redacted(key_str(&k), redact) {
                        v = string(REDACTED);
                    }
                    out.member(&mut k, &mut v);
                }
                pg_sys::JsonbIteratorToken::WJB_DONE => break,
                _ => {}
            }
        }
    }
    out.finish()
}

/// Whether two member values (as the iterator gives them, nested ones as
/// binary) are the same: same type and the same bytes. jsonb encodes a
/// value one way, so equal bytes are equal values; a numeric's scale is
/// part of it (1.5 and 1.50 differ, as their text does).
///
/// # Safety
/// Both must be values from a jsonb iterator.
unsafe fn same(a: &pg_sys::JsonbValue, b: &pg_sys::JsonbValue) -> bool {
    use pg_sys::jbvType::{jbvBinary as BINARY, jbvBool as BOOL, jbvNull as NULL};
    use pg_sys::jbvType::{jbvNumeric as NUMERIC, jbvString as STRING};
    if a.type_ != b.type_ {
        return false;
    }
    // SAFETY: the union member the type names.
    unsafe {
        let bytes = |p: *const u8, len: usize| std::slice::from_raw_parts(p, len);
        match a.type_ {
            NULL => true,
            BOOL => a.val.boolean == b.val.boolean,
            STRING => key_str(a) == key_str(b),
            NUMERIC => {
                let (x, y) = (a.val.numeric.cast::<u8>(), b.val.numeric.cast::<u8>());
                let (lx, ly) = (
                    pgrx::varlena::varsize_any(x.cast()),
                    pgrx::varlena::varsize_any(y.cast()),
                );
                lx == ly && bytes(x, lx) == bytes(y, ly)
            }
            BINARY => {
                let (x, y) = (a.val.binary, b.val.binary);
                x.len == y.len
                    && bytes(x.data.cast(), x.len as usize) == bytes(y.data.cast(), y.len as usize)
            }
            _ => false,
        }
    }
}

/// The members that differ between the old and the new version of a row
/// (objects of one row type: the same keys in the same order), redacted
/// ones as redacted, as `(old, new)`.
///
/// # Safety
/// Both must be jsonb objects.
pub unsafe fn changed(
    old: *mut pg_sys::Jsonb,
    new: *mut pg_sys::Jsonb,
    redact: &[String],
) -> (*mut pg_sys::Jsonb, *mut pg_sys::Jsonb) {
    let (mut before, mut after) = (Builder::new(), Builder::new());
    // SAFETY: iterates both objects' members in step.
    unsafe {
        let mut io = pg_sys::JsonbIteratorInit(&mut (*old).root);
        let mut inew = pg_sys::JsonbIteratorInit(&mut (*new).root);
        let (mut ko, mut vo, mut kn, mut vn): (
            pg_sys::JsonbValue,
            pg_sys::JsonbValue,
            pg_sys::JsonbValue,
            pg_sys::JsonbValue,
        ) = (
            std::mem::zeroed(),
            std::mem::zeroed(),
            std::mem::zeroed(),
            std::mem::zeroed(),
        );
        loop {
            let to = pg_sys::JsonbIteratorNext(&mut io, &mut ko, true);
            let tn = pg_sys::JsonbIteratorNext(&mut inew, &mut kn, true);
            match (to, tn) {
                (pg_sys::JsonbIteratorToken::WJB_KEY, pg_sys::JsonbIteratorToken::WJB_KEY) => {
                    if key_str(&ko) != key_str(&kn) {
                        // Not one row type after all: both whole.
                        return (redacted(old, redact), redacted(new, redact));
                    }
                    pg_sys::JsonbIteratorNext(&mut io, &mut vo, true);
                    pg_sys::JsonbIteratorNext(&mut inew, &mut vn, true);
                    if !same(&vo, &vn) {
                        if is_redacted(key_str(&ko), redact) {
                            vo = string(REDACTED);
                            vn = string(REDACTED);
                        }
                        before.member(&mut ko, &mut vo);
                        after.member(&mut kn, &mut vn);
                    }
                }
                (pg_sys::JsonbIteratorToken::WJB_DONE, pg_sys::JsonbIteratorToken::WJB_DONE) => {
                    break
                }
                (a, b) if a == b => {}
                _ => return (redacted(old, redact), redacted(new, redact)),
            }
        }
    }
    (before.finish(), after.finish())
}

/// `jsonb_in` of JSON text (an event's detail, built in Rust).
pub fn parse(json: &str) -> Result<*mut pg_sys::Jsonb, crate::error::WardenError> {
    let text = std::ffi::CString::new(json)
        .map_err(|_| crate::error::WardenError::Internal("JSON text with a NUL byte".into()))?;
    // SAFETY: jsonb_in reads the NUL-terminated text during the call.
    let datum = unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[pg_sys::Datum::from(text.as_ptr()).into()],
        )
    };
    Ok(datum.map_or(null_mut(), |d| d.cast_mut_ptr()))
}

/// A jsonb value's varlena bytes (a fresh, uncompressed value).
///
/// # Safety
/// `jb` must be a detoasted jsonb.
pub unsafe fn bytes(jb: *mut pg_sys::Jsonb) -> Vec<u8> {
    // SAFETY: as the caller's.
    unsafe {
        let len = pgrx::varlena::varsize_any(jb.cast());
        std::slice::from_raw_parts(jb.cast::<u8>(), len).to_vec()
    }
}

/// A jsonb value's text output (`jsonb_out`): what entry MACs cover.
///
/// # Safety
/// `jb` must be a detoasted jsonb.
pub unsafe fn text(jb: *mut pg_sys::Jsonb) -> Vec<u8> {
    // SAFETY: as the caller's; the text is palloc'd and copied.
    unsafe {
        let out = pg_sys::JsonbToCString(
            null_mut(),
            &mut (*jb).root,
            pgrx::varlena::varsize_any(jb.cast()) as i32,
        );
        let bytes = std::ffi::CStr::from_ptr(out).to_bytes().to_vec();
        pg_sys::pfree(out.cast());
        bytes
    }
}
