//! Custom shared objects: the [`SharedObject`] trait and the type-level list of registered
//! types a server knows.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};

/// An object that lives in the manager's server process and answers typed requests — the
/// counterpart of Python's `BaseManager.register(typeid, callable)`, without arbitrary code: the
/// server only ever decodes a `Request` of a type registered when the manager was built.
///
/// The object's state is created by the client ([`Manager::create`](crate::Manager::create))
/// and sent to the server, which then owns it; every [`Proxy::call`](crate::Proxy::call) runs
/// [`handle`](Self::handle) in the server, one call at a time.
///
/// # Examples
///
/// ```
/// use multiproc::SharedObject;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Counter(u64);
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterOp { Add(u64), Get }
///
/// impl SharedObject for Counter {
///     type Request = CounterOp;
///     type Reply = u64;
///     fn handle(&mut self, req: CounterOp) -> u64 {
///         if let CounterOp::Add(n) = req {
///             self.0 += n;
///         }
///         self.0
///     }
/// }
///
/// let mut c = Counter::default();
/// assert_eq!(c.handle(CounterOp::Add(2)), 2);
/// ```
pub trait SharedObject: Serialize + DeserializeOwned + Send + 'static {
    /// What a client may ask.
    type Request: Serialize + DeserializeOwned;
    /// What the object answers.
    type Reply: Serialize + DeserializeOwned;
    /// Answers one request (in the server process; the object is borrowed exclusively).
    fn handle(&mut self, req: Self::Request) -> Self::Reply;
}

/// The name a type is registered under.
pub(crate) fn type_key<T: 'static>() -> &'static str {
    std::any::type_name::<T>()
}

/// A shared object without its type, as the server holds it.
pub(crate) trait Erased: Send {
    /// Decodes a request, handles it, encodes the reply.
    fn call(&mut self, req: &[u8]) -> Result<Vec<u8>, CodecError>;
}

struct Holder<T>(T);

impl<T: SharedObject> Erased for Holder<T> {
    fn call(&mut self, req: &[u8]) -> Result<Vec<u8>, CodecError> {
        let req: T::Request = codec::decode(req)?;
        codec::encode(&self.0.handle(req))
    }
}

/// The list of custom types a manager's server accepts, built by
/// [`ManagerBuilder::register`](crate::ManagerBuilder::register): `()` is the empty list and
/// `(T, Rest)` adds `T` to `Rest`. You never implement it yourself.
///
/// # Examples
///
/// ```
/// fn accepts<R: multiproc::Registry>() {}
/// accepts::<()>();
/// ```
pub trait Registry: 'static {
    /// Creates the object of the registered type `name` from its encoded initial value;
    /// `None` if no type of that name is registered.
    #[doc(hidden)]
    fn construct(name: &str, init: &[u8]) -> Option<Result<ErasedObject, CodecError>>;
    /// Whether `name` is registered.
    #[doc(hidden)]
    fn contains(name: &str) -> bool;
}

/// An object held by the server, its type erased. Only the crate can use it.
#[doc(hidden)]
pub struct ErasedObject(pub(crate) Box<dyn Erased>);

impl Registry for () {
    fn construct(_: &str, _: &[u8]) -> Option<Result<ErasedObject, CodecError>> {
        None
    }
    fn contains(_: &str) -> bool {
        false
    }
}

impl<T: SharedObject, R: Registry> Registry for (T, R) {
    fn construct(name: &str, init: &[u8]) -> Option<Result<ErasedObject, CodecError>> {
        if name == type_key::<T>() {
            Some(codec::decode::<T>(init).map(|v| ErasedObject(Box::new(Holder(v)))))
        } else {
            R::construct(name, init)
        }
    }
    fn contains(name: &str) -> bool {
        name == type_key::<T>() || R::contains(name)
    }
}
