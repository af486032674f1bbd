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

/// Find `struct NAME`'s member byte offsets in a BTF blob.
fn member_offsets(btf: &[u8], name: &str, members: &[&str]) -> Result<Vec<u32>, BtfError> {
    let u16_at = |o: usize| btf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        btf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    const SHORT: BtfError = BtfError::Short("type section");
    if u16_at(0) != Some(0xeb9f) {
        return Err(BtfError::NotBtf);
    }
    let hdr_len = u32_at(4).ok_or(BtfError::Short("header"))? as usize;
    let (type_off, type_len) = (
        u32_at(8).ok_or(BtfError::Short("header"))? as usize,
        u32_at(12).ok_or(BtfError::Short("header"))? as usize,
    );
    let str_off = u32_at(16).ok_or(BtfError::Short("header"))? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let string = |off: u32| -> &[u8] {
        let start = strings + off as usize;
        let rest = btf.get(start..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let mut at = types;
    while at + 12 <= types + type_len {
        let (name_off, info) = (u32_at(at).ok_or(SHORT)?, u32_at(at + 4).ok_or(SHORT)?);
        let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        let body = at + 12;
        if kind == KIND_STRUCT && string(name_off) == name.as_bytes() {
            let mut found = vec![None; members.len()];
            for m in 0..vlen {
                let rec = body + 12 * m;
                let (m_name, m_off) = (u32_at(rec).ok_or(SHORT)?, u32_at(rec + 8).ok_or(SHORT)?);
                let bits = if kind_flag == 1 { m_off & 0xff_ffff } else { m_off };
                if let Some(i) = members.iter().position(|w| w.as_bytes() == string(m_name)) {
                    found[i] = Some(bits / 8);
                }
            }
            return members
                .iter()
                .zip(found)
                .map(|(m, f)| f.ok_or_else(|| BtfError::NoMember(name.into(), (*m).into())))
                .collect();
        }
        at = body
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
    }
    Err(BtfError::NoStruct(name.into()))
}

/// The offsets the probes need, from the running kernel.
pub fn kernel_offsets() -> Result<KernelOffsets, BtfError> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").map_err(BtfError::Read)?;
    let task = member_offsets(&btf, "task_struct", &["pid", "tgid", "exit_code", "comm"])?;
    let bprm = member_offsets(&btf, "linux_binprm", &["filename"])?;
    Ok(KernelOffsets {
        task_pid: task[0],
        task_tgid: task[1],
        task_exit_code: task[2],
        task_comm: task[3],
        binprm_filename: bprm[0],
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
    }

    #[test]
    fn rejects_garbage() {
        assert!(super::member_offsets(b"nope", "task_struct", &["pid"]).is_err());
        assert!(super::member_offsets(&[], "task_struct", &["pid"]).is_err());
    }
}
