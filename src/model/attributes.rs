//! Instance attributes and the string pool that lets instances share them.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Instance attributes: a map from name to value kept as one sorted slice, whose
/// strings discovery shares between instances (most tasks carry the same names
/// and many equal values: cluster, service, zone, port). At 10,000 instances this
/// is about a third of a `BTreeMap<String, String>` per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Attributes(Box<[(Arc<str>, Arc<str>)]>);

impl Attributes {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Arc<str>>, value: impl Into<Arc<str>>) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let key = key.into();
        match v.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => v[i].1 = value.into(),
            Err(i) => v.insert(i, (key, value.into())),
        }
        self.0 = v.into_boxed_slice();
    }

    /// Removes `key`; its value if it was there.
    pub fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let i = self.find(key).ok()?;
        let mut v = std::mem::take(&mut self.0).into_vec();
        let (_, value) = v.remove(i);
        self.0 = v.into_boxed_slice();
        Some(value)
    }

    /// Shares every name and value with equal strings in `pool`.
    pub fn intern(&mut self, pool: &mut Interner) {
        for (k, v) in self.0.iter_mut() {
            *k = pool.get(k);
            *v = pool.get(v);
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>> FromIterator<(K, V)> for Attributes {
    /// A later pair wins over an earlier one with the same name.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<Arc<str>, Arc<str>> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Attributes(map.into_iter().collect())
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>, const N: usize> From<[(K, V); N]> for Attributes {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a str, &'a str);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a str)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A pool of shared strings. `sweep` forgets those no one else holds any more.
#[derive(Debug, Default)]
pub struct Interner(std::collections::HashSet<Arc<str>>);

impl Interner {
    /// The pooled string equal to `s`, pooling `s` when there is none.
    pub fn get(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.0.get(&**s) {
            Some(p) => p.clone(),
            None => {
                self.0.insert(s.clone());
                s.clone()
            }
        }
    }

    /// The pooled string equal to `s`, pooling a copy when there is none.
    pub fn share(&mut self, s: &str) -> Arc<str> {
        match self.0.get(s) {
            Some(p) => p.clone(),
            None => {
                let p: Arc<str> = Arc::from(s);
                self.0.insert(p.clone());
                p
            }
        }
    }

    pub fn sweep(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}
