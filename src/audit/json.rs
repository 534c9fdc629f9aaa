//! The JSON values of audit entries, rendered straight from a row's
//! columns as `row_to_json` renders them.
//!
//! `row_to_json` (and `to_jsonb`) look every column's type up again for
//! every row: on a four-column row that is most of its cost, more than the
//! INSERT being audited. Here each audited trigger gets a [`RowPlan`] once:
//! per column, how PostgreSQL renders that type in JSON (the categories of
//! its `json_categorize_type`: numbers, booleans, date/time in ISO 8601,
//! embedded JSON, arrays and composites through `to_json`, a user type's
//! cast to `json`, everything else as an escaped string of its output) and
//! the function that renders it. Rendering a row is then a loop over the
//! values: common types (integers, text, uuid, booleans) without a function
//! call at all, the others through their cached output function.
//!
//! The text is what `row_to_json(row)::text` gives for the same row (a
//! pg_test holds it to that for every kind of column): the trail stores it
//! as `json`, exactly as rendered, and entry MACs cover these bytes.
//!
//! Plans are dropped when their table's relation cache entry is invalidated
//! (ALTER TABLE, CREATE or DROP TRIGGER, a rename) and when a cast is
//! created or dropped; the callbacks only mark, lookups drop.

use crate::backend::BackendLocal;
use crate::error::WardenError;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::io::Write;
use std::rc::Rc;

/// What a redacted value is recorded as.
pub const REDACTED: &[u8] = br#""[redacted]""#;

/// How a column's values are rendered (PostgreSQL's JSON type categories,
/// with the common types done here without a function call).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// float4, float8, numeric: the output, bare if it is a JSON number
    /// (NaN and the infinities are quoted).
    Number,
    /// date, timestamp, timestamptz: ISO 8601, quoted.
    DateTime(pg_sys::Oid),
    /// json: its text, verbatim.
    JsonText,
    /// jsonb: its output, verbatim.
    Jsonb,
    /// text, varchar: the bytes, escaped.
    Text,
    /// uuid: canonical lowercase form, quoted.
    Uuid,
    /// arrays and composites: `to_json(value)`.
    ToJson,
    /// a user type with a cast to json: the cast.
    Cast,
    /// anything else: the output, escaped.
    Other,
}

struct Column {
    dropped: bool,
    /// `"name":` as JSON.
    label: Vec<u8>,
    redacted: bool,
    kind: Kind,
    typlen: i16,
    typbyval: bool,
    /// The output function, `to_json` call or cast (in the plan's memory
    /// context); null for kinds rendered here.
    call: *mut pg_sys::FmgrInfo,
}

/// How one audited trigger renders its table's rows.
pub struct RowPlan {
    relid: pg_sys::Oid,
    trigger: pg_sys::Oid,
    /// `schema.table`.
    pub target: Rc<str>,
    /// The name generation (see `audit::names_generation`) `target` is from.
    names_seen: u64,
    columns: Vec<Column>,
    /// The row key: (label, column index or None when the table no longer
    /// has that column, redacted).
    key: Vec<(Vec<u8>, Option<usize>, bool)>,
    context: pg_sys::MemoryContext,
}

impl Drop for RowPlan {
    fn drop(&mut self) {
        // SAFETY: the plan's own context; nothing outside the plan points
        // into it (a plan in use is kept alive by its Rc).
        unsafe { pg_sys::MemoryContextDelete(self.context) };
    }
}

/// A row's values, deformed.
pub struct Values {
    datums: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Values {
    /// # Safety
    /// `tuple` must be a valid tuple of `desc`.
    pub unsafe fn of(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> Values {
        // SAFETY: as the caller's; one slot per attribute.
        unsafe {
            let natts = (*desc).natts as usize;
            let mut v = Values {
                datums: vec![pg_sys::Datum::from(0); natts],
                nulls: vec![true; natts],
            };
            crate::backend::unguarded::heap_deform_tuple(
                tuple,
                desc,
                v.datums.as_mut_ptr(),
                v.nulls.as_mut_ptr(),
            );
            v
        }
    }
}

impl RowPlan {
    /// The whole row as a JSON object (redacted columns as redacted).
    pub fn row(&self, row: &Values) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 24 * self.columns.len());
        out.push(b'{');
        let mut first = true;
        for (i, col) in self.columns.iter().enumerate() {
            if col.dropped {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&col.label);
            self.value(i, row, &mut out);
        }
        out.push(b'}');
        out
    }

    /// The row key: the key columns, in key order.
    pub fn key(&self, row: &Values) -> Option<Vec<u8>> {
        if self.key.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(16 * self.key.len());
        out.push(b'{');
        for (n, (label, at, redacted)) in self.key.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(label);
            match at {
                _ if *redacted => out.extend_from_slice(REDACTED),
                Some(i) => self.value(*i, row, &mut out),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
        Some(out)
    }

    /// The columns whose rendering differs between two versions of a row,
    /// as `(old, new)` objects (redacted ones as redacted): an UPDATE's
    /// change. A column is unchanged when its values are the same bytes,
    /// or render the same; a redacted column, only when they are the same
    /// bytes (its values are never rendered: it is listed, as redacted on
    /// both sides, whenever what is stored changed).
    pub fn changed(&self, old: &Values, new: &Values) -> (Vec<u8>, Vec<u8>) {
        let (mut before, mut after) = (vec![b'{'], vec![b'{']);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, col) in self.columns.iter().enumerate() {
            if col.dropped || self.same_bytes(i, old, new) {
                continue;
            }
            a.clear();
            b.clear();
            self.value(i, old, &mut a);
            self.value(i, new, &mut b);
            if a == b && !col.redacted {
                continue;
            }
            if before.len() > 1 {
                before.push(b',');
                after.push(b',');
            }
            before.extend_from_slice(&col.label);
            after.extend_from_slice(&col.label);
            if col.redacted {
                before.extend_from_slice(REDACTED);
                after.extend_from_slice(REDACTED);
            } else {
                before.extend_from_slice(&a);
                after.extend_from_slice(&b);
            }
        }
        before.push(b'}');
        after.push(b'}');
        (before, after)
    }

    /// Whether column `i` holds the same bytes in both rows (as
    /// `datumIsEqual`: a value stored the same way).
    fn same_bytes(&self, i: usize, x: &Values, y: &Values) -> bool {
        let col = &self.columns[i];
        match (x.nulls[i], y.nulls[i]) {
            (true, true) => return true,
            (false, false) => {}
            _ => return false,
        }
        let (dx, dy) = (x.datums[i], y.datums[i]);
        if col.typbyval {
            return dx == dy;
        }
        // SAFETY: by-reference datums of this column's type: a varlena
        // (typlen -1, compared with its header, as stored), a C string
        // (-2) or `typlen` bytes.
        unsafe {
            let (px, py) = (dx.cast_mut_ptr::<u8>(), dy.cast_mut_ptr::<u8>());
            let size = |p: *mut u8| match col.typlen {
                -1 => pgrx::varlena::varsize_any(p.cast()),
                -2 => CStr::from_ptr(p.cast()).to_bytes().len() + 1,
                n => n as usize,
            };
            let (sx, sy) = (size(px), size(py));
            sx == sy && std::slice::from_raw_parts(px, sx) == std::slice::from_raw_parts(py, sy)
        }
    }

    /// Renders column `i` of `row` (its redaction is the caller's business
    /// only for `row`: handled here).
    fn value(&self, i: usize, row: &Values, out: &mut Vec<u8>) {
        let col = &self.columns[i];
        if col.redacted {
            out.extend_from_slice(REDACTED);
            return;
        }
        if row.nulls[i] {
            out.extend_from_slice(b"null");
            return;
        }
        let datum = row.datums[i];
        // SAFETY: a non-null value of the column's type, and the function
        // the plan chose for that type.
        unsafe {
            match col.kind {
                Kind::Bool => out.extend_from_slice(if datum.value() != 0 {
                    b"true"
                } else {
                    b"false"
                }),
                Kind::Int2 => write_int(out, datum.value() as i16 as i64),
                Kind::Int4 => write_int(out, datum.value() as i32 as i64),
                Kind::Int8 => write_int(out, datum.value() as i64),
                Kind::Number => {
                    let text = output(col.call, datum);
                    if is_json_number(text) {
                        out.extend_from_slice(text);
                    } else {
                        escape(text, out);
                    }
                }
                Kind::DateTime(type_oid) => {
                    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXDATELEN as usize + 1];
                    pg_sys::JsonEncodeDateTime(buf.as_mut_ptr(), datum, type_oid, std::ptr::null());
                    out.push(b'"');
                    out.extend_from_slice(CStr::from_ptr(buf.as_ptr()).to_bytes());
                    out.push(b'"');
                }
                Kind::JsonText => out.extend_from_slice(text_bytes(datum)),
                Kind::Jsonb => out.extend_from_slice(output(col.call, datum)),
                Kind::Text => escape(text_bytes(datum), out),
                Kind::Uuid => {
                    let bytes = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), 16);
                    write_uuid(out, bytes);
                }
                Kind::ToJson | Kind::Cast => {
                    let json = pg_sys::FunctionCall1Coll(col.call, pg_sys::InvalidOid, datum);
                    out.extend_from_slice(text_bytes(json));
                }
                Kind::Other => escape(output(col.call, datum), out),
            }
        }
    }
}

/// A value's text from its output function (palloc'd in the current memory
/// context, freed with it).
///
/// # Safety
/// `call` is the output function of `datum`'s type.
unsafe fn output<'a>(call: *mut pg_sys::FmgrInfo, datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: as the caller's; output functions return a C string.
    unsafe { CStr::from_ptr(pg_sys::OutputFunctionCall(call, datum)).to_bytes() }
}

/// The bytes of a text-like varlena (detoasted into the current memory
/// context when stored compressed or out of line).
///
/// # Safety
/// `datum` is a text, varchar or json value.
unsafe fn text_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: as the caller's.
    unsafe {
        let mut value = datum.cast_mut_ptr::<pg_sys::varlena>();
        if pgrx::varlena::varatt_is_4b_c(value) || pgrx::varlena::varatt_is_1b_e(value) {
            value = pg_sys::pg_detoast_datum_packed(value);
        }
        std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(value).cast::<u8>(),
            pgrx::varlena::varsize_any_exhdr(value),
        )
    }
}

/// An integer as `int8out` writes it.
fn write_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

/// A uuid as `uuid_out` writes it, quoted.
fn write_uuid(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [b'"'; 38];
    let mut at = 1;
    for (i, b) in bytes.iter().take(16).enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            buf[at] = b'-';
            at += 1;
        }
        buf[at] = HEX[(b >> 4) as usize];
        buf[at + 1] = HEX[(b & 15) as usize];
        at += 2;
    }
    out.extend_from_slice(&buf);
}

/// A JSON string of `text`, escaped as PostgreSQL's `escape_json` does.
pub fn escape(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// Whether `s` is a JSON number (what `IsValidJsonNumber` accepts):
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
pub fn is_json_number(s: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if s.first() == Some(&b'-') {
        i += 1;
    }
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == s.len()
}

/// Plans in use, and what the invalidation callbacks have marked.
struct Plans {
    plans: Vec<Rc<RowPlan>>,
}

static PLANS: BackendLocal<RefCell<Plans>> =
    BackendLocal::new(RefCell::new(Plans { plans: Vec::new() }));
/// Relations whose cache entries were invalidated since the last lookup.
static INVALIDATED: BackendLocal<RefCell<Vec<pg_sys::Oid>>> =
    BackendLocal::new(RefCell::new(Vec::new()));
/// Set when every plan must go (a cast changed, or too many relations to
/// remember were invalidated).
static ALL_INVALIDATED: BackendLocal<Cell<bool>> = BackendLocal::new(Cell::new(false));

/// Plans kept before all are dropped (a backend auditing many tables).
const MAX_PLANS: usize = 64;
/// Invalidated relations remembered before it is simpler to drop all.
const MAX_INVALIDATED: usize = 256;

/// Registers the callbacks that keep plans current; once, from _PG_init.
pub fn init() {
    // SAFETY: called once from _PG_init with plain functions.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::CASTSOURCETARGET as i32,
            Some(cast_changed),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // Only marks: this can run in the middle of a lookup or a rendering.
    let marked = INVALIDATED.try_borrow_mut().ok().and_then(|mut list| {
        (relid != pg_sys::InvalidOid && list.len() < MAX_INVALIDATED).then(|| list.push(relid))
    });
    if marked.is_none() {
        ALL_INVALIDATED.set(true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn cast_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    ALL_INVALIDATED.set(true);
}

/// The plan for the firing trigger, built on its first row.
///
/// # Safety
/// `rel` and `trigger` are the firing trigger's.
pub unsafe fn plan_for(
    rel: pg_sys::Relation,
    trigger: *const pg_sys::Trigger,
    names_seen: u64,
) -> Result<Rc<RowPlan>, WardenError> {
    // SAFETY: as the caller's.
    let (relid, tgoid) = unsafe { ((*rel).rd_id, (*trigger).tgoid) };
    {
        let mut plans = PLANS.borrow_mut();
        let invalidated = std::mem::take(&mut *INVALIDATED.borrow_mut());
        if ALL_INVALIDATED.replace(false) || plans.plans.len() >= MAX_PLANS {
            plans.plans.clear();
        } else if !invalidated.is_empty() {
            plans.plans.retain(|p| !invalidated.contains(&p.relid));
        }
        if let Some(plan) = plans
            .plans
            .iter()
            .find(|p| p.trigger == tgoid && p.relid == relid && p.names_seen == names_seen)
        {
            return Ok(Rc::clone(plan));
        }
        plans.plans.retain(|p| p.trigger != tgoid);
    }
    // Not borrowed while building: the catalog lookups may run callbacks.
    // SAFETY: as the caller's.
    let plan = Rc::new(unsafe { build(rel, trigger, names_seen)? });
    PLANS.borrow_mut().plans.push(Rc::clone(&plan));
    Ok(plan)
}

/// The trigger's arguments, as `enable_audit` writes them: `pk=<column>`
/// and `redact=<column>`.
///
/// # Safety
/// `trigger` is a valid trigger.
unsafe fn trigger_args(trigger: *const pg_sys::Trigger) -> Vec<String> {
    // SAFETY: tgargs holds tgnargs C strings.
    unsafe {
        let n = (*trigger).tgnargs as usize;
        (0..n)
            .map(|i| {
                CStr::from_ptr(*(*trigger).tgargs.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// `"name":` for a JSON object.
fn label(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 3);
    escape(name, &mut out);
    out.push(b':');
    out
}

unsafe fn build(
    rel: pg_sys::Relation,
    trigger: *const pg_sys::Trigger,
    names_seen: u64,
) -> Result<RowPlan, WardenError> {
    let args = unsafe { trigger_args(trigger) };
    let picked = |prefix: &str| -> Vec<&str> {
        args.iter().filter_map(|a| a.strip_prefix(prefix)).collect()
    };
    let (key_names, redact) = (picked("pk="), picked("redact="));
    // SAFETY: the open relation; its descriptor and catalog row.
    unsafe {
        let schema = crate::audit::schema_name((*(*rel).rd_rel).relnamespace);
        let name = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy();
        let context = pg_sys::AllocSetContextCreateExtended(
            pg_sys::CacheMemoryContext,
            c"pg_warden audit row plan".as_ptr(),
            pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
            pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
            pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
        );
        // From here on the plan owns the context (dropped on an error too).
        let mut plan = RowPlan {
            relid: (*rel).rd_id,
            trigger: (*trigger).tgoid,
            target: Rc::from(format!("{schema}.{name}")),
            names_seen,
            columns: Vec::new(),
            key: Vec::new(),
            context,
        };
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        for attr in desc.iter() {
            let name = CStr::from_ptr(attr.attname.data.as_ptr()).to_bytes();
            let column = if attr.attisdropped {
                Column {
                    dropped: true,
                    label: Vec::new(),
                    redacted: false,
                    kind: Kind::Other,
                    typlen: attr.attlen,
                    typbyval: attr.attbyval,
                    call: std::ptr::null_mut(),
                }
            } else {
                let (kind, call) = categorize(attr.atttypid, context);
                Column {
                    dropped: false,
                    label: label(name),
                    redacted: redact.iter().any(|r| r.as_bytes() == name),
                    kind,
                    typlen: attr.attlen,
                    typbyval: attr.attbyval,
                    call,
                }
            };
            plan.columns.push(column);
        }
        // The trigger names its redacted and key columns as they were at
        // enable_audit(): one renamed or dropped since would silently log
        // in clear (or log no key). Refused until enable_audit() runs again.
        let present = |name: &[u8]| {
            plan.columns.iter().zip(desc.iter()).any(|(c, a)| {
                !c.dropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == name
            })
        };
        if let Some(gone) = redact
            .iter()
            .chain(key_names.iter())
            .find(|n| !present(n.as_bytes()))
        {
            return Err(WardenError::AuditColumnGone {
                column: gone.to_string(),
                table: plan.target.to_string(),
            });
        }
        for key in key_names {
            let at = plan.columns.iter().zip(desc.iter()).position(|(c, a)| {
                !c.dropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == key.as_bytes()
            });
            let redacted = redact.contains(&key);
            plan.key.push((label(key.as_bytes()), at, redacted));
        }
        Ok(plan)
    }
}

/// How values of `type_oid` are rendered, and the function that renders
/// them (allocated in `context`): `json_categorize_type`'s decisions.
unsafe fn categorize(
    type_oid: pg_sys::Oid,
    context: pg_sys::MemoryContext,
) -> (Kind, *mut pg_sys::FmgrInfo) {
    // SAFETY: catalog lookups (raise on a missing type); allocations in
    // the plan's context.
    unsafe {
        let call_of = |fn_oid: pg_sys::Oid| {
            let flinfo =
                pg_sys::MemoryContextAllocZero(context, std::mem::size_of::<pg_sys::FmgrInfo>())
                    .cast::<pg_sys::FmgrInfo>();
            pg_sys::fmgr_info_cxt(fn_oid, flinfo, context);
            flinfo
        };
        let output_of = |t: pg_sys::Oid| {
            let (mut fn_oid, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(t, &mut fn_oid, &mut varlena);
            call_of(fn_oid)
        };
        let base = pg_sys::getBaseType(type_oid);
        let none = std::ptr::null_mut();
        match base {
            pg_sys::BOOLOID => (Kind::Bool, none),
            pg_sys::INT2OID => (Kind::Int2, none),
            pg_sys::INT4OID => (Kind::Int4, none),
            pg_sys::INT8OID => (Kind::Int8, none),
            pg_sys::FLOAT4OID | pg_sys::FLOAT8OID | pg_sys::NUMERICOID => {
                (Kind::Number, output_of(base))
            }
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                (Kind::DateTime(base), none)
            }
            pg_sys::JSONOID => (Kind::JsonText, none),
            pg_sys::JSONBOID => (Kind::Jsonb, output_of(base)),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => (Kind::Text, none),
            pg_sys::UUIDOID => (Kind::Uuid, none),
            _ if pg_sys::get_element_type(base) != pg_sys::InvalidOid
                || pg_sys::type_is_rowtype(base) =>
            {
                (Kind::ToJson, to_json_call(type_oid, context))
            }
            _ => {
                if u32::from(base) >= pg_sys::FirstNormalObjectId {
                    let mut cast = pg_sys::InvalidOid;
                    let path = pg_sys::find_coercion_pathway(
                        pg_sys::JSONOID,
                        base,
                        pg_sys::CoercionContext::COERCION_EXPLICIT,
                        &mut cast,
                    );
                    if path == pg_sys::CoercionPathType::COERCION_PATH_FUNC
                        && cast != pg_sys::InvalidOid
                    {
                        return (Kind::Cast, call_of(cast));
                    }
                }
                (Kind::Other, output_of(base))
            }
        }
    }
}

/// A `to_json(anyelement)` call for values of `type_oid`: to_json reads
/// its argument's type from the call expression in flinfo, so the set-up
/// carries a FuncExpr over a NULL constant of that type.
unsafe fn to_json_call(
    type_oid: pg_sys::Oid,
    context: pg_sys::MemoryContext,
) -> *mut pg_sys::FmgrInfo {
    // SAFETY: allocations in the plan's context; a built-in function. (An
    // error before the switch back aborts the (sub)transaction, whose
    // clean-up sets the current context, as for PostgreSQL's own code that
    // switches contexts; pg_warden catches no error to carry on from.)
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(context);
        let flinfo =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info_cxt(pg_sys::Oid::from(pg_sys::F_TO_JSON), flinfo, context);
        let arg = pg_sys::makeNullConst(type_oid, -1, pg_sys::InvalidOid);
        (*flinfo).fn_expr = pg_sys::makeFuncExpr(
            pg_sys::Oid::from(pg_sys::F_TO_JSON),
            pg_sys::JSONOID,
            pg_sys::lappend(std::ptr::null_mut(), arg.cast()),
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::CoercionForm::COERCE_EXPLICIT_CALL,
        )
        .cast();
        pg_sys::MemoryContextSwitchTo(old);
        flinfo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_as_postgres_accepts_them() {
        for good in ["0", "-0", "1.5", "-12.25e+10", "1e-07", "10", "1E5"] {
            assert!(is_json_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "",
            "-",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn strings_escaped_as_postgres_escapes_them() {
        let mut out = Vec::new();
        escape(
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}é".as_bytes(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\nd\re\tf\bg\fh\u0001i\u001fé""#
        );
    }

    #[test]
    fn integers_as_int8out_writes_them() {
        for v in [0, 7, -7, 10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_int(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn uuids_in_canonical_form() {
        let mut out = Vec::new();
        write_uuid(&mut out, &[0xab; 16]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""abababab-abab-abab-abab-abababababab""#
        );
    }
}
