//! Typed proxies of the built-in shared objects and of custom ones.
//!
//! A proxy is a connection (shared with the [`Manager`] it came from) and an object id. Passed
//! to a child as (part of) its arguments, it connects anew in the child, with the key handed
//! over as a descriptor.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::WireManager;
use super::client::Client;
use super::object::SharedObject;
use super::protocol::{DictOp, ListOp, NsOp, Reply, Request};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};

/// The types a dict proxy stands for (a function type: the proxy is `Send` and `Sync`
/// whatever `K` and `V` are).
type Pair<K, V> = fn(K, V) -> (K, V);

/// What every proxy holds.
#[derive(Clone)]
pub(crate) struct Base {
    pub(crate) client: Arc<Client>,
    pub(crate) id: u64,
}

/// A proxy travels as its manager does, then its object's id (postcard lays the nested
/// struct's fields out in line: the same bytes as the three fields side by side).
#[derive(Serialize, Deserialize)]
struct WireBase {
    manager: WireManager,
    id: u64,
}

impl Serialize for Base {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireBase {
            manager: WireManager::of(&self.client),
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Base {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let WireBase { manager: w, id } = WireBase::deserialize(d)?;
        let client = Client::connect(&w.address, &w.key.0).map_err(D::Error::custom)?;
        Ok(Base {
            client: Arc::new(client),
            id,
        })
    }
}

impl Base {
    fn call(&self, req: &Request) -> Result<Reply> {
        self.client.call(req)
    }
}

fn enc<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    codec::encode(v).map_err(|e| Error::codec("cannot encode a value for the manager", e))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    codec::decode(b).map_err(|e| Error::codec("a value from the manager does not decode", e))
}

fn unexpected(r: Reply) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("unexpected reply from the manager: {r:?}"),
    )
}

fn value<T: DeserializeOwned>(r: Reply) -> Result<Option<T>> {
    match r {
        Reply::Value(v) => v.map(|b| dec(&b)).transpose(),
        r => Err(unexpected(r)),
    }
}

fn done(r: Reply) -> Result<()> {
    match r {
        Reply::Done => Ok(()),
        r => Err(unexpected(r)),
    }
}

fn flag(r: Reply) -> Result<bool> {
    match r {
        Reply::Bool(b) => Ok(b),
        r => Err(unexpected(r)),
    }
}

fn len(r: Reply) -> Result<usize> {
    match r {
        Reply::Len(n) => Ok(n as usize),
        r => Err(unexpected(r)),
    }
}

fn values<T: DeserializeOwned>(r: Reply) -> Result<Vec<T>> {
    match r {
        Reply::Values(v) => v.iter().map(|b| dec(b)).collect(),
        r => Err(unexpected(r)),
    }
}

/// Gives up a hold if `update_with`'s closure panics.
struct Unhold<'a>(&'a Base, bool);

impl Drop for Unhold<'_> {
    fn drop(&mut self) {
        if self.1 {
            let _ = self.0.call(&Request::Unhold(self.0.id));
        }
    }
}

/// The second half of an atomic update: the server holds the object for this connection and
/// `current` is its value; runs `f` on it and sends the new value through `commit`. If `f`
/// panics or the new value does not encode, the hold is released with nothing changed.
fn commit_held<C, N: Serialize>(
    base: &Base,
    current: C,
    f: impl FnOnce(C) -> N,
    commit: impl FnOnce(Vec<u8>) -> Result<Reply>,
) -> Result<N> {
    let mut guard = Unhold(base, true);
    let new = f(current);
    let r = commit(enc(&new)?);
    guard.1 = false;
    done(r?)?;
    Ok(new)
}

/// The impls every proxy type has; with `Op => Variant`, also `fn op(&self, Op)`, which sends
/// `Request::Variant(id, op)`.
macro_rules! proxy_common {
    ($name:ident $(<$($p:ident),*>)?, $op:ident => $variant:ident) => {
        impl$(<$($p),*>)? $name$(<$($p),*>)? {
            fn op(&self, op: $op) -> Result<Reply> {
                self.base.call(&Request::$variant(self.base.id, op))
            }
        }
        proxy_common!($name $(<$($p),*>)?);
    };
    ($name:ident $(<$($p:ident),*>)?) => {
        impl$(<$($p),*>)? Clone for $name$(<$($p),*>)? {
            fn clone(&self) -> Self {
                $name { base: self.base.clone(), _t: PhantomData }
            }
        }
        impl$(<$($p),*>)? fmt::Debug for $name$(<$($p),*>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("manager", &self.base.client.address)
                    .field("id", &self.base.id)
                    .finish()
            }
        }
        impl$(<$($p),*>)? Serialize for $name$(<$($p),*>)? {
            fn serialize<Z: Serializer>(&self, s: Z) -> std::result::Result<Z::Ok, Z::Error> {
                self.base.serialize(s)
            }
        }
        impl<'de $($(, $p)*)?> Deserialize<'de> for $name$(<$($p),*>)? {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { base: Base::deserialize(d)?, _t: PhantomData })
            }
        }
    };
}

mod blocking;
pub use blocking::{EventProxy, LockProxy, LockProxyGuard, QueueProxy};

/// A dict owned by a manager — Python's `manager.dict()`: keys `K`, values `V`.
///
/// The server keeps keys and values encoded; two keys are the same key when their encodings
/// are equal (true of integers, strings and derived types; not of floats' `-0.0` and `0.0`).
/// `keys`, `values` and `items` come in no particular order.
///
/// # Errors
/// Every method fails with [`ErrorKind::Disconnected`] once the manager is gone (at once, never
/// a hang), and [`ErrorKind::Codec`] if a stored value does not decode as `V`.
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let d = m.dict::<String, u64>()?;
/// d.insert(&"a".into(), &1)?;
/// d.update_with(&"a".into(), |v| v.unwrap_or(0) + 1)?;
/// assert_eq!(d.get(&"a".into())?, Some(2));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct DictProxy<K, V> {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<Pair<K, V>>,
}
proxy_common!(DictProxy<K, V>, DictOp => Dict);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The value of `key`, if any.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        value(self.op(DictOp::Get(enc(key)?))?)
    }

    /// Sets `key` to `value`; returns the value it had.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        self::value(self.op(DictOp::Insert(enc(key)?, enc(value)?))?)
    }

    /// Removes `key`; returns its value.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        value(self.op(DictOp::Remove(enc(key)?))?)
    }

    /// Whether `key` has a value.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn contains(&self, key: &K) -> Result<bool> {
        flag(self.op(DictOp::Contains(enc(key)?))?)
    }

    /// The number of entries.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn len(&self) -> Result<usize> {
        len(self.op(DictOp::Len)?)
    }

    /// Whether there are no entries.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A snapshot of the keys.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn keys(&self) -> Result<Vec<K>> {
        values(self.op(DictOp::Keys)?)
    }

    /// A snapshot of the values.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn values(&self) -> Result<Vec<V>> {
        values(self.op(DictOp::Values)?)
    }

    /// A snapshot of the entries.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.op(DictOp::Items)? {
            Reply::Pairs(p) => p.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect(),
            r => Err(unexpected(r)),
        }
    }

    /// Sets every entry of `entries`, in one request.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn update<'a>(&self, entries: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(k)?, enc(v)?)))
            .collect::<Result<Vec<_>>>()?;
        done(self.op(DictOp::Update(pairs))?)
    }

    /// Removes every entry.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn clear(&self) -> Result<()> {
        done(self.op(DictOp::Clear)?)
    }

    /// Replaces the value of `key` by `f(current)`, atomically: no other client reads or
    /// changes the dict between the read and the write (they wait), and a client that dies in
    /// between changes nothing. Returns the new value.
    ///
    /// `f` runs here, in the caller, while the server holds the dict for this connection.
    ///
    /// # Errors
    /// As the other methods. If `f` panics the dict is released unchanged.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn update_with(&self, key: &K, f: impl FnOnce(Option<V>) -> V) -> Result<V> {
        let k = enc(key)?;
        let current: Option<V> = value(self.op(DictOp::Hold(k.clone()))?)?;
        commit_held(&self.base, current, f, |bytes| {
            self.op(DictOp::Commit(k, Some(bytes)))
        })
    }
}

/// A list owned by a manager — Python's `manager.list()`.
///
/// # Errors
/// As [`DictProxy`]; an index out of range is [`ErrorKind::InvalidArgument`].
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let l = m.list::<u32>()?;
/// l.push(&1)?;
/// l.extend(&[2, 3])?;
/// assert_eq!(l.snapshot()?, [1, 2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ListProxy<T> {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<fn(T) -> T>,
}
proxy_common!(ListProxy<T>, ListOp => List);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `item`.
    ///
    /// # Examples
    /// See [`ListProxy`].
    #[doc(alias = "append")]
    pub fn push(&self, item: &T) -> Result<()> {
        done(self.op(ListOp::Push(enc(item)?))?)
    }

    /// Removes and returns the last item.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn pop(&self) -> Result<Option<T>> {
        value(self.op(ListOp::Pop)?)
    }

    /// The item at `index`, if there is one.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn get(&self, index: usize) -> Result<Option<T>> {
        value(self.op(ListOp::Get(index as u64))?)
    }

    /// Replaces the item at `index`; returns the old one.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `index` is out of range.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn set(&self, index: usize, item: &T) -> Result<T> {
        value(self.op(ListOp::Set(index as u64, enc(item)?))?)?
            .ok_or_else(|| Error::new(ErrorKind::Codec, "no old value in the reply"))
    }

    /// The number of items.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn len(&self) -> Result<usize> {
        len(self.op(ListOp::Len)?)
    }

    /// Whether the list is empty.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Appends every item, in one request.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn extend<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        let v = items.into_iter().map(enc).collect::<Result<Vec<_>>>()?;
        done(self.op(ListOp::Extend(v))?)
    }

    /// Inserts `item` before `index` (`index == len` appends).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `index > len`.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn insert(&self, index: usize, item: &T) -> Result<()> {
        done(self.op(ListOp::Insert(index as u64, enc(item)?))?)
    }

    /// Removes and returns the item at `index`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `index` is out of range.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn remove(&self, index: usize) -> Result<T> {
        value(self.op(ListOp::Remove(index as u64))?)?
            .ok_or_else(|| Error::new(ErrorKind::Codec, "no value in the reply"))
    }

    /// Every item, as they are now: iterate over this.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn snapshot(&self) -> Result<Vec<T>> {
        values(self.op(ListOp::Snapshot)?)
    }

    /// Removes every item.
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn clear(&self) -> Result<()> {
        done(self.op(ListOp::Clear)?)
    }
}

/// One shared value owned by a manager — Python's `manager.Namespace()`, typed: the value is
/// any serde type (a struct with the namespace's fields).
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let ns = m.namespace((0u32, String::new()))?;
/// ns.update(|(n, s)| (n + 1, s + "x"))?;
/// assert_eq!(ns.get()?, (1, "x".to_string()));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct NamespaceProxy<T> {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<fn(T) -> T>,
}
proxy_common!(NamespaceProxy<T>, NsOp => Namespace);

impl<T: Serialize + DeserializeOwned> NamespaceProxy<T> {
    fn some(r: Reply) -> Result<T> {
        value(r)?.ok_or_else(|| Error::new(ErrorKind::Codec, "no value in the reply"))
    }

    /// The value now.
    ///
    /// # Examples
    /// See [`NamespaceProxy`].
    pub fn get(&self) -> Result<T> {
        Self::some(self.op(NsOp::Get)?)
    }

    /// Replaces the value; returns the old one.
    ///
    /// # Examples
    /// See [`NamespaceProxy`].
    pub fn set(&self, value: &T) -> Result<T> {
        Self::some(self.op(NsOp::Set(enc(value)?))?)
    }

    /// Replaces the value by `f(value)` atomically (see [`DictProxy::update_with`]); returns
    /// the new value.
    ///
    /// # Examples
    /// See [`NamespaceProxy`].
    pub fn update(&self, f: impl FnOnce(T) -> T) -> Result<T>
    where
        T: Clone,
    {
        let current = Self::some(self.op(NsOp::Hold)?)?;
        commit_held(&self.base, current, f, |bytes| self.op(NsOp::Commit(bytes)))
    }
}

/// A proxy of a custom [`SharedObject`] of type `T`.
///
/// # Examples
/// See [`Manager::create`](crate::Manager::create).
pub struct Proxy<T> {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<fn(T) -> T>,
}
proxy_common!(Proxy<T>);

impl<T: SharedObject> Proxy<T> {
    /// Sends `req` to the object and returns its reply.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] if the manager is gone; [`ErrorKind::InvalidArgument`] if
    /// the server could not decode the request or the object's `handle` panicked.
    ///
    /// # Examples
    /// See [`Manager::create`](crate::Manager::create).
    pub fn call(&self, req: &T::Request) -> Result<T::Reply> {
        match self.base.call(&Request::Custom(self.base.id, enc(req)?))? {
            Reply::Custom(b) => dec(&b),
            r => Err(unexpected(r)),
        }
    }
}
