//! The data offsets of a custom-format archive that was written to a pipe.
//!
//! `pg_dump -Fc` writing to a pipe (as for every lifeboat backup) cannot seek back to record in
//! its table of contents where each table's data starts: every TOC entry says "offset not set".
//! `pg_restore -j N` on such an archive has every worker scan the file for its blocks (for
//! `--compress=0` dumps one length-prefixed chunk per row), and it has no sizes to start the
//! biggest tables first. So a parallel restore was slower than a serial one.
//!
//! [`OffsetIndex`] watches the archive's bytes go by (while they are written to the scratch
//! file), reads the header and the TOC, then follows the data blocks, noting where each one
//! starts. [`OffsetIndex::patches`] then gives the bytes to write over each TOC entry's offset
//! field, which is exactly what `pg_dump` writes when its output is a seekable file: the same
//! archive, with its offsets. Anything unexpected (another format version, odd lengths) turns
//! the index off: no patches, and `pg_restore` scans as before (slower, still correct).
//!
//! Layout (PostgreSQL's `pg_backup_archiver.c` and `pg_backup_custom.c`): an int is a sign byte
//! and `intSize` bytes little-endian; a string is an int length (`-1` = NULL) and its bytes; an
//! offset is a flag byte (1 not set, 2 set, 3 no data) and `offSize` bytes little-endian. A data
//! block is a type byte (1 data, 3 large objects), the dump id, then chunks (length, bytes)
//! ending with a zero length; a large-object block holds (oid, chunks…, 0) items ending with oid 0.

use std::collections::HashMap;

/// Archive versions whose TOC layout this reads (PostgreSQL 9.6 to 17).
const MIN_VERSION: (u8, u8) = (1, 12);
const MAX_VERSION: (u8, u8) = (1, 16);
/// Header and TOC larger than this are not indexed (memory stays bounded).
const MAX_HEAD: usize = 64 * 1024 * 1024;

const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the header and the TOC.
    Head,
    /// Expecting a block's type byte and dump id (or the end).
    Block,
    /// Expecting a chunk length of a data block; `blobs`: inside a large-object block.
    Chunk { blobs: bool },
    /// Expecting the oid of the next large object (0 ends the block).
    Oid,
}

/// Where the data blocks of a custom-format archive start; see the module documentation.
#[derive(Debug)]
pub struct OffsetIndex {
    state: State,
    failed: bool,
    /// Bytes seen so far: the file position of the next byte.
    pos: u64,
    head: Vec<u8>,
    pending: Vec<u8>,
    skip: u64,
    int_size: usize,
    off_size: usize,
    /// (dump id, position of its TOC entry's offset field) for entries whose offset is not set.
    unset: Vec<(i64, u64)>,
    starts: HashMap<i64, u64>,
}

impl Default for OffsetIndex {
    fn default() -> Self {
        Self {
            state: State::Head,
            failed: false,
            pos: 0,
            head: Vec::new(),
            pending: Vec::new(),
            skip: 0,
            int_size: 4,
            off_size: 8,
            unset: Vec::new(),
            starts: HashMap::new(),
        }
    }
}

/// Reads the header and the TOC from the start of an archive: `Ok(None)` when more bytes are
/// needed, `Err(())` when it is not an archive this understands.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
    int_size: usize,
}

enum Short {
    More,
    Bad,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.buf.get(self.at).ok_or(Short::More)?;
        self.at += 1;
        Ok(b)
    }

    fn int(&mut self) -> Result<i64, Short> {
        let sign = self.byte()?;
        let bytes = self.buf.get(self.at..self.at + self.int_size).ok_or(Short::More)?;
        self.at += self.int_size;
        let value = decode_le(bytes).ok_or(Short::Bad)?;
        Ok(if sign == 0 { value } else { -value })
    }

    fn string(&mut self) -> Result<Option<&[u8]>, Short> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| Short::Bad)?;
        let s = self.buf.get(self.at..self.at.checked_add(len).ok_or(Short::Bad)?).ok_or(Short::More)?;
        self.at += len;
        Ok(Some(s))
    }

    fn skip_string(&mut self) -> Result<(), Short> {
        self.string().map(|_| ())
    }
}

/// A little-endian unsigned value of up to 8 bytes (larger: the high bytes must be zero).
fn decode_le(bytes: &[u8]) -> Option<i64> {
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        if i >= 8 {
            if *b != 0 {
                return None;
            }
            continue;
        }
        v |= u64::from(*b) << (8 * i);
    }
    i64::try_from(v).ok()
}

/// What the header and TOC told.
struct Head {
    len: usize,
    int_size: usize,
    off_size: usize,
    unset: Vec<(i64, u64)>,
}

fn parse_head(buf: &[u8]) -> Result<Head, Short> {
    if buf.len() < 11 {
        return Err(Short::More);
    }
    if &buf[..5] != b"PGDMP" {
        return Err(Short::Bad);
    }
    let version = (buf[5], buf[6]);
    if version < MIN_VERSION || version > MAX_VERSION {
        return Err(Short::Bad);
    }
    let (int_size, off_size, format) = (usize::from(buf[8]), usize::from(buf[9]), buf[10]);
    if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) || format != 1 {
        return Err(Short::Bad);
    }
    let mut c = Cursor { buf, at: 11, int_size };
    let v = |min: u8| version >= (1, min);
    if v(15) {
        c.byte()?; // compression algorithm
    } else {
        c.int()?; // compression level
    }
    for _ in 0..7 {
        c.int()?; // creation time
    }
    c.skip_string()?; // database name
    c.skip_string()?; // server version
    c.skip_string()?; // pg_dump version
    let count = c.int()?;
    if count < 0 {
        return Err(Short::Bad);
    }
    let mut unset = Vec::new();
    for _ in 0..count {
        let dump_id = c.int()?;
        c.int()?; // had dumper
        c.skip_string()?; // table oid
        c.skip_string()?; // oid
        c.skip_string()?; // tag
        c.skip_string()?; // desc
        c.int()?; // section
        c.skip_string()?; // definition
        c.skip_string()?; // drop statement
        c.skip_string()?; // copy statement
        c.skip_string()?; // namespace
        c.skip_string()?; // tablespace
        if v(14) {
            c.skip_string()?; // table access method
        }
        if v(16) {
            c.int()?; // relkind
        }
        c.skip_string()?; // owner
        c.skip_string()?; // with oids
        while c.string()?.is_some() {} // dependencies, ending with NULL
        let field = c.at;
        let flag = c.byte()?;
        c.buf.get(c.at..c.at + off_size).ok_or(Short::More)?;
        c.at += off_size;
        if !(1..=3).contains(&flag) {
            return Err(Short::Bad);
        }
        if flag == OFFSET_NOT_SET {
            unset.push((dump_id, field as u64));
        }
    }
    Ok(Head { len: c.at, int_size, off_size, unset })
}

impl OffsetIndex {
    /// Takes the next bytes of the archive.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.failed {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(data.len());
                self.skip -= n as u64;
                self.pos += n as u64;
                data = &data[n..];
                continue;
            }
            if self.state == State::Head {
                let take = data.len().min(MAX_HEAD + 1 - self.head.len().min(MAX_HEAD));
                self.head.extend_from_slice(&data[..take]);
                data = &data[take..];
                match parse_head(&self.head) {
                    Ok(head) => {
                        self.int_size = head.int_size;
                        self.off_size = head.off_size;
                        self.unset = head.unset;
                        self.pos = head.len as u64;
                        self.state = State::Block;
                        // What followed the TOC is data: feed it again.
                        let rest = self.head.split_off(head.len);
                        self.head = Vec::new();
                        self.update(&rest);
                    }
                    Err(Short::More) if self.head.len() <= MAX_HEAD => {}
                    Err(_) => self.fail(),
                }
                continue;
            }
            let need = match self.state {
                State::Block => 2 + self.int_size,
                _ => 1 + self.int_size,
            };
            let n = (need - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() < need {
                self.pos += n as u64;
                continue;
            }
            let start = self.pos + n as u64 - need as u64;
            self.pos += n as u64;
            let item = std::mem::take(&mut self.pending);
            self.step(&item, start);
        }
    }

    fn int_of(&self, bytes: &[u8]) -> Option<i64> {
        let v = decode_le(&bytes[1..])?;
        Some(if bytes[0] == 0 { v } else { -v })
    }

    fn step(&mut self, item: &[u8], start: u64) {
        match self.state {
            State::Head => self.fail(),
            State::Block => {
                let (kind, id) = (item[0], self.int_of(&item[1..]));
                let Some(id) = id else { return self.fail() };
                self.state = match kind {
                    BLK_DATA => State::Chunk { blobs: false },
                    BLK_BLOBS => State::Oid,
                    _ => return self.fail(),
                };
                if self.starts.insert(id, start).is_some() {
                    self.fail();
                }
            }
            State::Chunk { blobs } => match self.int_of(item) {
                Some(0) => self.state = if blobs { State::Oid } else { State::Block },
                Some(len) if len > 0 => self.skip = len.unsigned_abs(),
                _ => self.fail(),
            },
            State::Oid => match self.int_of(item) {
                Some(0) => self.state = State::Block,
                Some(_) => self.state = State::Chunk { blobs: true },
                None => self.fail(),
            },
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.head = Vec::new();
        self.unset.clear();
        self.starts.clear();
    }

    /// The writes that record every data block's offset in the TOC: (file position, bytes).
    /// Empty when the archive was not understood, did not end after a whole block, or has its
    /// offsets already.
    pub fn patches(&self) -> Vec<(u64, Vec<u8>)> {
        if self.failed || self.state != State::Block || self.skip > 0 || !self.pending.is_empty() {
            return Vec::new();
        }
        self.unset
            .iter()
            .filter_map(|(id, field)| {
                let start = *self.starts.get(id)?;
                let mut bytes = vec![OFFSET_SET];
                bytes.extend((0..self.off_size).map(|i| if i < 8 { (start >> (8 * i)) as u8 } else { 0 }));
                Some((*field, bytes))
            })
            .collect()
    }

    /// Bytes seen.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.pos == 0 && self.head.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny archive of version 1.14 in pg_dump's layout: two TOC entries with data (offsets
    /// not set), one without, a data block of two chunks and a large-object block.
    fn archive(version: u8) -> (Vec<u8>, Vec<usize>) {
        fn int(out: &mut Vec<u8>, v: i64) {
            out.push(u8::from(v < 0));
            out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn string(out: &mut Vec<u8>, s: Option<&str>) {
            match s {
                None => int(out, -1),
                Some(s) => {
                    int(out, s.len() as i64);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        let mut a = b"PGDMP".to_vec();
        a.extend_from_slice(&[1, version, 0, 4, 8, 1]);
        if version >= 15 {
            a.push(0);
        } else {
            int(&mut a, 0);
        }
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut a, v);
        }
        for s in ["app", "15.2", "15.2"] {
            string(&mut a, Some(s));
        }
        int(&mut a, 3);
        let mut fields = Vec::new();
        for (id, flag) in [(7, OFFSET_NOT_SET), (8, 3), (9, OFFSET_NOT_SET)] {
            int(&mut a, id);
            int(&mut a, 1);
            for s in ["1259", "16384", "t", "TABLE DATA"] {
                string(&mut a, Some(s));
            }
            int(&mut a, 2);
            for s in [Some(""), Some(""), Some("COPY t FROM stdin;\n"), Some("public"), Some("")] {
                string(&mut a, s);
            }
            if version >= 14 {
                string(&mut a, Some("heap"));
            }
            if version >= 16 {
                int(&mut a, i64::from(b'r'));
            }
            string(&mut a, Some("postgres"));
            string(&mut a, Some("false"));
            string(&mut a, Some("3"));
            string(&mut a, None);
            fields.push(a.len());
            a.push(flag);
            a.extend_from_slice(&[0; 8]);
        }
        let mut starts = vec![a.len()];
        a.push(BLK_DATA);
        int(&mut a, 7);
        for chunk in [&b"1\tone\n"[..], b"2\ttwo\n"] {
            int(&mut a, chunk.len() as i64);
            a.extend_from_slice(chunk);
        }
        int(&mut a, 0);
        starts.push(a.len());
        a.push(BLK_BLOBS);
        int(&mut a, 9);
        int(&mut a, 16500); // oid
        int(&mut a, 3);
        a.extend_from_slice(b"abc");
        int(&mut a, 0);
        int(&mut a, 0); // end of the large objects
        (a, [fields, starts].concat())
    }

    #[test]
    fn offsets_are_found_whatever_the_chunking() {
        for version in [12, 14, 15, 16] {
            let (a, marks) = archive(version);
            let (f7, f9, s7, s9) = (marks[0] as u64, marks[2] as u64, marks[3] as u64, marks[4] as u64);
            let mut want = vec![(f7, vec![OFFSET_SET]), (f9, vec![OFFSET_SET])];
            want[0].1.extend_from_slice(&s7.to_le_bytes());
            want[1].1.extend_from_slice(&s9.to_le_bytes());
            for chunk in [1, 2, 3, 7, 64, a.len()] {
                let mut index = OffsetIndex::default();
                for part in a.chunks(chunk) {
                    index.update(part);
                }
                assert_eq!(index.len(), a.len() as u64);
                assert_eq!(index.patches(), want, "version 1.{version}, chunks of {chunk}");
            }
        }
    }

    #[test]
    fn anything_unexpected_gives_no_patches() {
        let (a, marks) = archive(14);
        let mut cut = OffsetIndex::default();
        cut.update(&a[..a.len() - 3]);
        assert!(cut.patches().is_empty(), "an archive cut mid-block");
        let mut other = a.clone();
        other[6] = 17;
        let mut index = OffsetIndex::default();
        index.update(&other);
        assert!(index.patches().is_empty(), "an unknown version");
        let mut odd = a.clone();
        odd[marks[3]] = 9; // not a block type
        let mut index = OffsetIndex::default();
        index.update(&odd);
        assert!(index.patches().is_empty(), "an unknown block type");
        let mut index = OffsetIndex::default();
        index.update(b"not an archive at all, but long enough");
        assert!(index.patches().is_empty());
    }
}
