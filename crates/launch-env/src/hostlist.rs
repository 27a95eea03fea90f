//! Slurm's hostlist syntax (`SLURM_STEP_NODELIST`, `SLURM_JOB_NODELIST`): `gpu[01-03,07],login1`
//! names `gpu01 gpu02 gpu03 gpu07 login1`; ranges keep their zero padding, and a name may have
//! several bracket groups (`r[1-2]n[1-2]`: every combination, first group outermost), as
//! `scontrol show hostnames` expands them.

use crate::LaunchError;

/// More host names than any cluster has: a list past it is an error, not an allocation.
const MAX_HOSTS: usize = 1_000_000;

/// The host names `list` names, in order.
pub fn expand(list: &str) -> Result<Vec<String>, LaunchError> {
    let bad = |why: &str| LaunchError::Hostlist {
        list: list.to_owned(),
        why: why.to_owned(),
    };
    let mut hosts = Vec::new();
    for item in split_top_level(list).map_err(bad)? {
        if item.is_empty() {
            continue;
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (literal, after) = match rest.find('[') {
                Some(open) => (&rest[..open], &rest[open..]),
                None => (rest, ""),
            };
            for name in &mut names {
                name.push_str(literal);
            }
            if after.is_empty() {
                break;
            }
            let close = after.find(']').ok_or_else(|| bad("a '[' without ']'"))?;
            let choices = ranges(&after[1..close]).map_err(|why| bad(&why))?;
            if names.len().saturating_mul(choices.len()) > MAX_HOSTS {
                return Err(bad("it names more than a million hosts"));
            }
            names = names
                .iter()
                .flat_map(|n| choices.iter().map(move |c| format!("{n}{c}")))
                .collect();
            rest = &after[close + 1..];
        }
        hosts.extend(names);
    }
    Ok(hosts)
}

/// The items of a comma-separated list whose brackets may hold commas themselves.
fn split_top_level(list: &str) -> Result<Vec<&str>, &'static str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth > 0 => return Err("nested '['"),
            '[' => depth = 1,
            ']' if depth == 0 => return Err("a ']' without '['"),
            ']' => depth = 0,
            ',' if depth == 0 => {
                items.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("a '[' without ']'");
    }
    items.push(list[start..].trim());
    Ok(items)
}

/// `01-03,07` as `["01", "02", "03", "07"]`: each number as wide as the range's start.
fn ranges(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{part:?} is not a number or a range"))
        };
        let (start, end) = (number(lo)?, number(hi)?);
        if end < start {
            return Err(format!("the range {part:?} runs backwards"));
        }
        if end - start >= 1_000_000 {
            return Err(format!("the range {part:?} is too large"));
        }
        out.extend((start..=end).map(|n| format!("{n:0width$}", width = lo.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_as_scontrol_show_hostnames_does() {
        assert_eq!(expand("node1").unwrap(), ["node1"]);
        assert_eq!(
            expand("gpu[01-03,07],login1").unwrap(),
            ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
        );
        assert_eq!(expand("a[8-10]").unwrap(), ["a8", "a9", "a10"]);
        assert_eq!(
            expand("n[008-010]-ib").unwrap(),
            ["n008-ib", "n009-ib", "n010-ib"]
        );
        assert_eq!(
            expand("r[1-2]n[1-2]").unwrap(),
            ["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        assert_eq!(expand("x[1],y").unwrap(), ["x1", "y"]);
    }

    #[test]
    fn malformed_lists_are_errors_that_quote_them() {
        for bad in ["gpu[01-03", "gpu01]", "gpu[a-b]", "gpu[3-1]", "g[[1]]"] {
            let err = expand(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
