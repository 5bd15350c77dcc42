//! Subordinate ids: the ranges of host uids and gids `/etc/subuid` and `/etc/subgid` grant
//! a user, which `newuidmap`/`newgidmap` let an ordinary user map into a user namespace.
//!
//! Exists so that the user-namespace mapping and `kiln check` read the files one way, the
//! way shadow's tools do: one `USER:START:COUNT` per line, the user named by login name or
//! by numeric uid, several lines (ranges) allowed per user. Lines the tools would not use
//! (comments, malformed ones, empty or overflowing ranges) are skipped rather than failing
//! the whole file, since one bad line in a shared system file is not this user's problem.

/// A range of subordinate ids: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The ranges `file_text` (the text of `/etc/subuid` or `/etc/subgid`) grants the user
/// named `user` with uid `uid`, in file order.
pub fn subordinate_ranges(file_text: &str, user: &str, uid: u32) -> Vec<IdRange> {
    file_text
        .lines()
        .filter_map(parse_line)
        .filter(|(owner, _)| *owner == user || owner.parse::<u32>() == Ok(uid))
        .map(|(_, range)| range)
        .collect()
}

/// The ranges `file_text` gives users other than `user` (by name), in file order.
pub fn ranges_of_others(file_text: &str, user: &str) -> Vec<IdRange> {
    file_text
        .lines()
        .filter_map(parse_line)
        .filter(|(owner, _)| *owner != user)
        .map(|(_, range)| range)
        .collect()
}

/// Where shadow's tools start giving out subordinate ids (`SUB_UID_MIN` in login.defs).
const FIRST_SUBORDINATE_ID: u32 = 100_000;

/// A range of `count` ids that no user has in any of `file_texts` (the subuid and subgid
/// files): after every range given out, and from 100000 on, as `useradd` would pick it.
/// It is what `kiln check` suggests for `usermod --add-subuids`; `None` when the ids are
/// exhausted.
pub fn unused_range(file_texts: &[&str], count: u32) -> Option<IdRange> {
    let end = file_texts
        .iter()
        .flat_map(|text| text.lines().filter_map(parse_line))
        .map(|(_, range)| u64::from(range.start) + u64::from(range.count))
        .fold(u64::from(FIRST_SUBORDINATE_ID), u64::max);
    let start = u32::try_from(end).ok()?;
    (u64::from(start) + u64::from(count) <= u64::from(u32::MAX)).then_some(IdRange { start, count })
}

/// One `OWNER:START:COUNT` line, or `None` for a comment, a blank or a malformed line.
fn parse_line(line: &str) -> Option<(&str, IdRange)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let mut fields = line.split(':');
    let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || owner.is_empty() {
        return None;
    }
    let range = IdRange {
        start: number(start)?,
        count: number(count)?,
    };
    // The last id must exist: start + count - 1 fits a u32 (and (u32)-1 is no id at all).
    let usable =
        range.count > 0 && u64::from(range.start) + u64::from(range.count) <= u64::from(u32::MAX);
    usable.then_some((owner, range))
}

/// A decimal id or count; `+5`, ` 5` and `0x5` are not.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u32, count: u32) -> IdRange {
        IdRange { start, count }
    }

    #[test]
    fn a_users_ranges_are_found_by_name_or_uid_in_file_order() {
        let text = "\
# subordinate ids
alice:100000:65536

bob:165536:65536
1000:231072:1000
alice:300000:10
";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            [range(100000, 65536), range(231072, 1000), range(300000, 10)]
        );
        assert_eq!(
            subordinate_ranges(text, "bob", 1001),
            [range(165536, 65536)]
        );
        assert_eq!(subordinate_ranges(text, "carol", 1002), []);
        // A user without a passwd entry is matched by uid alone.
        assert_eq!(subordinate_ranges(text, "", 1000), [range(231072, 1000)]);
    }

    #[test]
    fn comments_blanks_and_malformed_lines_are_skipped() {
        let text = "\
  # alice:1:1
\t
alice
alice:100000
alice:100000:65536:extra
alice:x:65536
alice:100000:-1
alice:+100000:65536
alice:100000:0
alice:4294967295:1
alice:4294901760:65536
:100000:65536
alice: 100000:65536
  alice:200000:65536  
";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            [range(200000, 65536)]
        );
        assert_eq!(subordinate_ranges(text, "", 0), []);
        assert_eq!(subordinate_ranges("", "alice", 1000), []);
    }

    #[test]
    fn an_unused_range_starts_after_every_range_of_both_files() {
        assert_eq!(unused_range(&["", ""], 65536), Some(range(100000, 65536)));
        let subuid = "alice:100000:65536\nbob:165536:65536\n# x:9000000:1\n";
        let subgid = "alice:100000:65536\ncarol:500000:10\n";
        assert_eq!(
            unused_range(&[subuid, subgid], 65536),
            Some(range(500010, 65536))
        );
        assert_eq!(
            unused_range(&["low:10:10\n"], 65536),
            Some(range(100000, 65536))
        );
        assert_eq!(unused_range(&["full:4294900000:60000\n"], 65536), None);
    }
}
