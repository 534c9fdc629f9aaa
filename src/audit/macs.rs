//! What the trail's MACs cover: an entry, a batch of entries, a
//! transaction's seal (blocks are in `chain`). All are HMAC-SHA256 under
//! the audit key, over length-prefixed fields with a domain label
//! (`crypto::FieldsMac`); JSON values are covered as the text stored.

use crate::crypto::{FieldsMac, Key32, MAC_LEN};

const ENTRY_LABEL: &[u8] = b"pg_warden/v1/audit-entry";
const BATCH_LABEL: &[u8] = b"pg_warden/v1/audit-batch";
const SEAL_LABEL: &[u8] = b"pg_warden/v1/audit-seal";

/// What every entry of a row (an entry, or a batch) shares, as stored.
pub struct Shared<'a> {
    /// The row's id: a copy of the row under another id does not verify.
    pub id: i64,
    pub at: i64,
    pub txid: i64,
    /// The (first) entry's place in its transaction.
    pub txn_seq: i32,
    pub workspace: Option<[u8; 16]>,
    pub actor: Option<[u8; 16]>,
    pub db_role: &'a [u8],
    pub action: &'a [u8],
    pub target: Option<&'a [u8]>,
}

impl Shared<'_> {
    fn feed(&self, mac: &mut FieldsMac) {
        mac.field(&self.id.to_be_bytes())
            .field(&self.at.to_be_bytes())
            .field(&self.txid.to_be_bytes())
            .field(&self.txn_seq.to_be_bytes())
            .optional(self.workspace.as_ref().map(|w| &w[..]))
            .optional(self.actor.as_ref().map(|a| &a[..]))
            .field(self.db_role)
            .field(self.action)
            .optional(self.target);
    }
}

/// An entry's JSON values (row key, old values, new values, detail), as
/// stored.
pub type Values<'a> = [Option<&'a [u8]>; 4];

/// The MAC of one entry: every stored column but the seal.
pub fn entry_mac(key: &Key32, shared: &Shared<'_>, values: &Values<'_>) -> [u8; MAC_LEN] {
    let mut mac = FieldsMac::new(key, ENTRY_LABEL);
    shared.feed(&mut mac);
    for v in values {
        mac.optional(*v);
    }
    mac.finish()
}

/// The JSON values of a batch as its MAC covers them: which of row key,
/// old values, new values, detail its entries have (bits 1, 2, 4, 8), the
/// length of each value (entry by entry, each entry's in that order), and
/// all of their bytes, concatenated.
pub struct BatchValues<'a, T: IntoIterator<Item = &'a [u8]>> {
    pub present: u8,
    pub lengths: &'a [usize],
    pub texts: T,
}

/// The MAC of a batch: what its entries share, how many there are, and
/// their values (every stored column but the seal). The values
/// go in as a few long fields, not one field per value: a batch holds a
/// thousand entries.
pub fn batch_mac<'a, T: IntoIterator<Item = &'a [u8]>>(
    key: &Key32,
    shared: &Shared<'_>,
    entries: usize,
    values: BatchValues<'a, T>,
) -> [u8; MAC_LEN] {
    let mut mac = FieldsMac::new(key, BATCH_LABEL);
    shared.feed(&mut mac);
    mac.field(&(entries as u64).to_be_bytes())
        .field(&[values.present]);
    let lengths: Vec<u8> = values
        .lengths
        .iter()
        .flat_map(|n| (*n as u64).to_be_bytes())
        .collect();
    mac.field(&lengths);
    mac.field_in_parts(values.lengths.iter().sum(), values.texts);
    mac.finish()
}

/// The newest block of a chain a seal's writer knew of: its seq (0: none
/// yet) and its MAC (empty for none). A seal covers it, so a block deleted
/// and made again over fewer transactions no longer matches the seals
/// written after it.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct Head {
    pub seq: i64,
    pub mac: Vec<u8>,
}

/// The MAC of a transaction's seal in a workspace: how many entries it
/// wrote there, the newest block of the chain its writer knew of, and the
/// MACs of the rows holding them (entries and batches), in order.
pub fn seal_mac<'a>(
    key: &Key32,
    workspace: Option<[u8; 16]>,
    txid: i64,
    entries: i64,
    head: &Head,
    row_macs: impl Iterator<Item = &'a [u8]>,
) -> [u8; MAC_LEN] {
    let mut mac = FieldsMac::new(key, SEAL_LABEL);
    mac.field(workspace.as_ref().map_or(&[][..], |w| &w[..]))
        .field(&txid.to_be_bytes())
        .field(&(entries as u64).to_be_bytes())
        .field(&head.seq.to_be_bytes())
        .field(&head.mac);
    for m in row_macs {
        mac.field(m);
    }
    mac.finish()
}
