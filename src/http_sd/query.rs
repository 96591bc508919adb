//! The query parameters of `/sd/*`: `shard=INDEX/COUNT` and `shard_key=service|task`,
//! read with the rules of `--shard` and `--shard-key`. Pure.

use clap::ValueEnum;

use crate::model::{Shard, ShardKey};

/// The share a query asks for: None for the whole list (no `shard`, or a count
/// of 1). `shard_key` defaults to `service`, as `--shard-key` does. Anything else
/// (an unknown or repeated parameter, a bad value, `shard_key` alone) is an error
/// that says what is wrong.
pub fn parse(query: Option<&str>) -> Result<Option<(Shard, ShardKey)>, String> {
    let mut shard: Option<Shard> = None;
    let mut key: Option<ShardKey> = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "shard" if shard.is_some() => return Err("shard given twice".into()),
            "shard" => shard = Some(value.parse::<Shard>().map_err(|e| format!("shard: {e}"))?),
            "shard_key" if key.is_some() => return Err("shard_key given twice".into()),
            "shard_key" => {
                key =
                    Some(ShardKey::from_str(&value, true).map_err(|_| {
                        format!("shard_key: expected service or task, not {value:?}")
                    })?)
            }
            "" => {}
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: the parameters are shard=INDEX/COUNT and shard_key=service|task"
                ));
            }
        }
    }
    match (shard, key) {
        (None, Some(_)) => Err("shard_key needs shard=INDEX/COUNT".into()),
        (None, None) => Ok(None),
        (Some(s), _) if s.count == 1 => Ok(None),
        (Some(s), k) => Ok(Some((s, k.unwrap_or(ShardKey::Service)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_and_keys() {
        let s = |index, count| Shard { index, count };
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("")), Ok(None));
        assert_eq!(
            parse(Some("shard=1/3")),
            Ok(Some((s(1, 3), ShardKey::Service)))
        );
        assert_eq!(
            parse(Some("shard=0%2F2&shard_key=task")),
            Ok(Some((s(0, 2), ShardKey::Task)))
        );
        assert_eq!(
            parse(Some("shard_key=TASK&shard=1/2")),
            Ok(Some((s(1, 2), ShardKey::Task)))
        );
        assert_eq!(parse(Some("shard=0/1")), Ok(None), "one shard is the whole");
    }

    #[test]
    fn bad_parameters_say_why() {
        for (q, needle) in [
            ("shard=2/2", "INDEX/COUNT"),
            ("shard=a/b", "INDEX/COUNT"),
            ("shard=1", "INDEX/COUNT"),
            ("shard=0/2&shard=1/2", "twice"),
            ("shard=0/2&shard_key=pod", "service or task"),
            ("shard_key=task", "needs shard"),
            ("shards=0/2", "unknown parameter \"shards\""),
            ("shard=0/2&shard_key=task&shard_key=task", "twice"),
        ] {
            let e = parse(Some(q)).unwrap_err();
            assert!(e.contains(needle), "{q}: {e}");
        }
    }
}
