//! A detached container's monitor holds about what conmon does: once the container runs,
//! the monitor gives back the memory that starting it needed and the steady state does not.

/// Gives back what starting the container needed and the monitor does not: freed heap,
/// and the pages of code and read-only data it ran through (kiln's and its libraries'),
/// which come back from the page cache if ever used again. A monitor then holds about
/// what conmon does.
pub(crate) fn trim_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_mappings(&smaps) {
        // SAFETY: a private file mapping none of whose pages was ever written (no
        // anonymous pages): MADV_DONTNEED drops its pages from this process and the next
        // access reads them from the file again, unchanged. Code running now faults its
        // page back in.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The address ranges of private, non-writable file mappings whose pages all still equal
/// the file's (`Anonymous: 0 kB` in smaps): code and read-only data.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            let perms = fields.next().unwrap_or("");
            let file = fields.nth(3).is_some_and(|p| p.starts_with('/'));
            let range = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            );
            current = match (range, perms.as_bytes()) {
                ((Ok(s), Ok(e)), [b'r', b'-', _, b'p']) if file => Some((s, e)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}
