//! Subordinate id ranges (`/etc/subuid`, `/etc/subgid`): the host ids an ordinary user
//! may map into a user namespace through the setuid `newuidmap`/`newgidmap`.

/// A range of host ids: `start`, `start + 1`, … `start + count - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The ranges the file's text gives the user, named by login name or numeric uid (both
/// forms are valid in `/etc/subuid`), in the file's order. Malformed lines are skipped,
/// as shadow's own tools skip them.
pub fn subordinate_ranges(file_text: &str, user: &str, uid: u32) -> Vec<IdRange> {
    let uid = uid.to_string();
    file_text
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            let matches = owner == user || owner == uid;
            (matches && fields.next().is_none() && count > 0).then_some(IdRange { start, count })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid_and_bad_lines_skipped() {
        let text = "# comment\n\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\nalice:x:1\nalice:1:2:3\nalice:5:0\n";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            [
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(subordinate_ranges(text, "carol", 1002).is_empty());
    }
}
