//! Member offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`). Rust eBPF has no CO-RE relocations, so the probes read task
//! fields at offsets the loader looks up here and stores in the `OFFSETS` map.

use cordon_probe_common::KernelOffsets;

const KIND_STRUCT: u32 = 4;

/// Why the probes' struct offsets could not be read from the kernel's BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("/sys/kernel/btf/vmlinux: {0} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Read(#[source] std::io::Error),
    #[error("not a little-endian BTF blob")]
    NotBtf,
    #[error("BTF blob cut short ({0})")]
    Short(&'static str),
    #[error("struct {0} not found")]
    NoStruct(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
}

const KIND_UNION: u32 = 5;

/// The parts of a BTF blob the offset lookup reads.
struct Blob<'a> {
    btf: &'a [u8],
    strings: usize,
    /// Byte offset of each type record, by type id (id 0 is `void`).
    types: Vec<usize>,
}

impl Blob<'_> {
    fn u32_at(&self, o: usize) -> Result<u32, BtfError> {
        self.btf
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(BtfError::Short("type section"))
    }

    fn string(&self, off: u32) -> &[u8] {
        let start = self.strings + off as usize;
        let rest = self.btf.get(start..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (name offset, kind, vlen, kind_flag, body offset, size-or-type) of type `id`.
    fn head(&self, id: u32) -> Result<(u32, u32, usize, u32, usize, u32), BtfError> {
        let at = *self.types.get(id as usize).ok_or(BtfError::Short("type id"))?;
        let (name_off, info, size_type) = (self.u32_at(at)?, self.u32_at(at + 4)?, self.u32_at(at + 8)?);
        Ok((
            name_off,
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31,
            at + 12,
            size_type,
        ))
    }

    /// Look for `want`'s members in struct or union `id`, whose start is `base` bytes into the
    /// outer struct, descending into anonymous struct and union members (`mm_struct` keeps
    /// most of its fields in one).
    fn members(
        &self,
        id: u32,
        base: u32,
        want: &[&str],
        found: &mut [Option<u32>],
        depth: u32,
    ) -> Result<(), BtfError> {
        let (_, _, vlen, kind_flag, body, _) = self.head(id)?;
        for m in 0..vlen {
            let rec = body + 12 * m;
            let (m_name, m_type, m_off) = (self.u32_at(rec)?, self.u32_at(rec + 4)?, self.u32_at(rec + 8)?);
            let bits = if kind_flag == 1 { m_off & 0xff_ffff } else { m_off };
            let at = base + bits / 8;
            let name = self.string(m_name);
            if name.is_empty() && depth < 4 {
                // Through typedefs and qualifiers to the anonymous struct or union.
                let mut t = m_type;
                for _ in 0..8 {
                    let (_, kind, _, _, _, next) = self.head(t)?;
                    match kind {
                        KIND_STRUCT | KIND_UNION => {
                            self.members(t, at, want, found, depth + 1)?;
                            break;
                        }
                        8..=11 | 18 => t = next,
                        _ => break,
                    }
                }
            } else if let Some(i) = want.iter().position(|w| w.as_bytes() == name) {
                found[i].get_or_insert(at);
            }
        }
        Ok(())
    }
}

/// Find `struct NAME`'s member byte offsets in a BTF blob.
fn member_offsets(btf: &[u8], name: &str, members: &[&str]) -> Result<Vec<u32>, BtfError> {
    const SHORT: BtfError = BtfError::Short("type section");
    if btf.get(..2) != Some(&0xeb9fu16.to_le_bytes()[..]) {
        return Err(BtfError::NotBtf);
    }
    let mut blob = Blob {
        btf,
        strings: 0,
        types: vec![0],
    };
    let header = |o: usize| {
        blob.u32_at(o)
            .map(|v| v as usize)
            .map_err(|_| BtfError::Short("header"))
    };
    let (hdr_len, type_off, type_len, str_off) = (header(4)?, header(8)?, header(12)?, header(16)?);
    blob.strings = hdr_len + str_off;
    let start = hdr_len + type_off;
    let mut at = start;
    let mut target = None;
    while at + 12 <= start + type_len {
        let (name_off, info) = (blob.u32_at(at)?, blob.u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == KIND_STRUCT && target.is_none() && blob.string(name_off) == name.as_bytes() {
            target = Some(u32::try_from(blob.types.len()).map_err(|_| SHORT)?);
        }
        blob.types.push(at);
        at += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
    }
    let id = target.ok_or_else(|| BtfError::NoStruct(name.into()))?;
    let mut found = vec![None; members.len()];
    blob.members(id, 0, members, &mut found, 0)?;
    members
        .iter()
        .zip(found)
        .map(|(m, f)| f.ok_or_else(|| BtfError::NoMember(name.into(), (*m).into())))
        .collect()
}

/// The offsets the probes need, from the running kernel.
pub fn kernel_offsets() -> Result<KernelOffsets, BtfError> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").map_err(BtfError::Read)?;
    let task = member_offsets(&btf, "task_struct", &["pid", "tgid", "exit_code", "comm", "mm"])?;
    let bprm = member_offsets(&btf, "linux_binprm", &["filename"])?;
    let mm = member_offsets(&btf, "mm_struct", &["arg_start", "arg_end"])?;
    Ok(KernelOffsets {
        task_pid: task[0],
        task_tgid: task[1],
        task_exit_code: task[2],
        task_comm: task[3],
        binprm_filename: bprm[0],
        task_mm: task[4],
        mm_arg_start: mm[0],
        mm_arg_end: mm[1],
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_task_struct_on_this_kernel() {
        let Ok(o) = super::kernel_offsets() else { return };
        // pid and tgid are adjacent pid_t fields in every kernel since 2.6.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        assert!(o.task_comm > o.task_pid);
        // Inside mm_struct's anonymous struct: found through it, adjacent longs.
        assert!(o.mm_arg_start > 0);
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
    }

    #[test]
    fn rejects_garbage() {
        assert!(super::member_offsets(b"nope", "task_struct", &["pid"]).is_err());
        assert!(super::member_offsets(&[], "task_struct", &["pid"]).is_err());
    }
}
