//! Method registry and dispatch: name lookup, SPDK state checks, success hooks.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};

use serde::Deserialize;
use serde_json::Value;

use crate::error::RpcError;
use crate::params::decode;
pub use crate::responder::Responder;
use crate::state::{ServerState, RUNTIME, STARTUP};

/// A method's params: `None` when absent or `null`, otherwise the object or array as sent.
pub type Params = Option<Value>;

/// A method handler. It must answer (or drop) the [`Responder`] exactly once, now or later and
/// from any thread; it must not block for long, since it runs on the caller's thread (the
/// server's single "rpc" thread for socket requests): send slow work elsewhere and answer from
/// there.
pub type Handler = Arc<dyn Fn(Params, Responder) + Send + Sync>;

/// SPDK's message for a RUNTIME-only method called in STARTUP.
pub const NOT_INITIALIZED_MESSAGE: &str =
    "Method may only be called after framework is initialized using framework_start_init RPC.";
/// SPDK's message for a STARTUP-only method called in RUNTIME.
pub const ALREADY_INITIALIZED_MESSAGE: &str = "Method may only be called before framework is \
     initialized. Use --wait-for-rpc command line parameter and then issue this RPC before the \
     framework initialization is complete.";

/// One registered method.
#[derive(Clone)]
pub struct MethodSpec {
    /// Method name as clients send it.
    pub name: &'static str,
    /// Mask of [`STARTUP`] / [`RUNTIME`] in which the method may be called.
    pub states: u32,
    /// Whether a successful call changes configuration (runs the [`Registry::on_success`] hooks).
    pub mutates: bool,
    /// The handler.
    pub handler: Handler,
}

impl std::fmt::Debug for MethodSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSpec")
            .field("name", &self.name)
            .field("states", &self.states)
            .field("mutates", &self.mutates)
            .finish_non_exhaustive()
    }
}

struct Entry {
    spec: MethodSpec,
    /// For a deprecated alias, the name it stands for.
    alias_of: Option<&'static str>,
    warned: AtomicBool,
}

type SuccessHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Passes a held-back successful answer on to the client; see
/// [`Registry::on_success_deferred`].
pub type Release = Box<dyn FnOnce() + Send>;

type DeferredHook = Arc<dyn Fn(&str, Release) + Send + Sync>;

struct Inner {
    state: Arc<ServerState>,
    methods: RwLock<BTreeMap<&'static str, Arc<Entry>>>,
    hooks: RwLock<Vec<SuccessHook>>,
    deferred: RwLock<Vec<DeferredHook>>,
}

/// The method table shared by the server and the application.
///
/// Thread contract: `Clone` (shares one table), `Send + Sync`; every method may be called from
/// any thread. Handlers and hooks are never called with an internal lock held, so they may call
/// back into the registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("methods", &self.methods(false))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethodsParams {
    #[serde(default)]
    current: bool,
    #[serde(default)]
    include_aliases: bool,
}

impl Registry {
    /// A registry using `state` for state checks, with the built-in `rpc_get_methods`
    /// (params `current` bool=false, `include_aliases` bool=false; result: sorted names).
    pub fn new(state: Arc<ServerState>) -> Self {
        let reg = Self {
            inner: Arc::new(Inner {
                state,
                methods: RwLock::new(BTreeMap::new()),
                hooks: RwLock::new(Vec::new()),
                deferred: RwLock::new(Vec::new()),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&reg.inner);
        reg.register_fn(
            "rpc_get_methods",
            STARTUP | RUNTIME,
            false,
            move |params, reply| {
                let p: GetMethodsParams = match decode(params) {
                    Ok(p) => p,
                    Err(e) => return reply.err(e),
                };
                match weak.upgrade() {
                    Some(inner) => {
                        reply.ok(Registry { inner }.method_names(p.current, p.include_aliases))
                    }
                    None => reply.err(RpcError::internal("registry is gone")),
                }
            },
        );
        reg
    }

    /// Adds a method.
    ///
    /// # Panics
    /// If a method or alias with the same name is already registered (a programming error).
    pub fn register(&self, spec: MethodSpec) {
        self.insert(Entry {
            spec,
            alias_of: None,
            warned: AtomicBool::new(false),
        });
    }

    /// Adds a method from a closure; see [`Registry::register`].
    ///
    /// # Panics
    /// If a method or alias with the same name is already registered.
    pub fn register_fn(
        &self,
        name: &'static str,
        states: u32,
        mutates: bool,
        f: impl Fn(Params, Responder) + Send + Sync + 'static,
    ) {
        self.register(MethodSpec {
            name,
            states,
            mutates,
            handler: Arc::new(f),
        });
    }

    /// Adds `alias` as a deprecated name for the registered method `target` (SPDK's
    /// `spdk_rpc_register_alias_deprecated`): it behaves like `target`, logs a deprecation
    /// warning on first use, and is listed by `rpc_get_methods` only with `include_aliases`.
    ///
    /// # Panics
    /// If `target` is not registered or `alias` is already taken.
    pub fn register_alias_deprecated(&self, alias: &'static str, target: &'static str) {
        let spec = match self.lookup(target) {
            Some(entry) if entry.alias_of.is_none() => entry.spec.clone(),
            _ => panic!("rpc alias '{alias}': target method '{target}' is not registered"),
        };
        self.insert(Entry {
            spec: MethodSpec {
                name: alias,
                ..spec
            },
            alias_of: Some(target),
            warned: AtomicBool::new(false),
        });
    }

    fn insert(&self, entry: Entry) {
        let name = entry.spec.name;
        let mut methods = self
            .inner
            .methods
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if methods.contains_key(name) {
            drop(methods);
            panic!("rpc method '{name}' registered twice");
        }
        methods.insert(name, Arc::new(entry));
    }

    fn lookup(&self, name: &str) -> Option<Arc<Entry>> {
        self.inner
            .methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The state mask (`STARTUP`, `RUNTIME` or both) a method may be called in, or `None` if
    /// no such method (or alias) is registered.
    pub fn method_states(&self, name: &str) -> Option<u32> {
        self.lookup(name).map(|e| e.spec.states)
    }

    /// Sorted names of the registered methods (aliases excluded); with `current_only`, only
    /// those callable in the current state (`rpc_get_methods {"current": true}`).
    pub fn methods(&self, current_only: bool) -> Vec<String> {
        self.method_names(current_only, false)
    }

    /// Like [`Registry::methods`], optionally including deprecated aliases.
    pub fn method_names(&self, current_only: bool, include_aliases: bool) -> Vec<String> {
        let state = self.inner.state.get();
        let methods = self
            .inner
            .methods
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        methods
            .values()
            .filter(|e| include_aliases || e.alias_of.is_none())
            .filter(|e| !current_only || e.spec.states & state != 0)
            .map(|e| e.spec.name.to_owned())
            .collect()
    }

    /// Dispatches one request: looks the method up, checks the state, and runs the handler on
    /// this thread. `reply` is always consumed and completed exactly once — with the handler's
    /// answer (now or later, from any thread), with an error (-32601 unknown method, -1 wrong
    /// state), or with -32603 if the handler drops it or panics. For a notification pass
    /// [`Responder::ignore`]: the method runs and nothing is sent.
    pub fn call(&self, method: &str, params: Params, reply: Responder) {
        let Some(entry) = self.lookup(method) else {
            return reply.err(RpcError::method_not_found(method));
        };
        let spec = &entry.spec;
        let state = self.inner.state.get();
        if spec.states & state == 0 {
            let msg = if state == STARTUP {
                NOT_INITIALIZED_MESSAGE
            } else {
                ALREADY_INITIALIZED_MESSAGE
            };
            return reply.err(RpcError::invalid_state(msg));
        }
        if let Some(target) = entry.alias_of {
            if !entry.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("RPC method {method} is deprecated. Use {target} instead.");
            }
        }
        let params = params.filter(|p| !p.is_null());
        let reply = if spec.mutates {
            let inner = Arc::clone(&self.inner);
            let name = spec.name;
            reply.wrap(move |r, reply| {
                if r.is_ok() {
                    let hooks = inner
                        .hooks
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    for hook in hooks {
                        hook(name);
                    }
                    let deferred = inner
                        .deferred
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    if !deferred.is_empty() {
                        let mut release: Release = Box::new(move || reply.respond(r));
                        for hook in deferred.into_iter().rev() {
                            let next = release;
                            release = Box::new(move || hook(name, next));
                        }
                        return release();
                    }
                }
                reply.respond(r);
            })
        } else {
            reply
        };
        let handler = Arc::clone(&spec.handler);
        // A panicking handler drops `reply` while unwinding, which answers -32603; the panic
        // must not take down the calling (server) thread.
        if catch_unwind(AssertUnwindSafe(|| handler(params, reply))).is_err() {
            tracing::error!("rpc handler for '{method}' panicked");
        }
    }

    /// Adds a hook called with the method name after every successful call of a `mutates`
    /// method (used for `--persist`). It runs on the thread that answered the call, after the
    /// handler answered and before the answer is passed on to the client.
    pub fn on_success(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.inner
            .hooks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(hook));
    }

    /// Adds a hook that holds back the answer of every successful call of a `mutates` method
    /// until the hook calls the [`Release`] it is given (from any thread, at any later time),
    /// e.g. until the new configuration is on disk (`--persist`), so that a client never sees
    /// success for a change that a crash could still lose. It runs on the thread that answered
    /// the call, after the [`Registry::on_success`] hooks; it must not block. Dropping the
    /// `Release` uncalled answers the client with `-32603`.
    pub fn on_success_deferred(&self, hook: impl Fn(&str, Release) + Send + Sync + 'static) {
        self.inner
            .deferred
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(hook));
    }

    /// The state used for state checks.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.inner.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn call(reg: &Registry, method: &str, params: Params) -> Result<Value, RpcError> {
        let (tx, rx) = mpsc::channel();
        reg.call(method, params, Responder::new(move |r| tx.send(r).unwrap()));
        let r = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert!(rx.try_recv().is_err(), "answered once");
        r
    }

    fn registry() -> Registry {
        let reg = Registry::new(Arc::new(ServerState::new(STARTUP)));
        reg.register_fn("start", STARTUP, true, |_, r| r.ok(true));
        reg.register_fn("run", RUNTIME, true, |_, r| r.ok("ran"));
        reg.register_fn("fail", RUNTIME | STARTUP, true, |_, r| {
            r.err(RpcError::from_errno(19, "bdev 'x' not found"))
        });
        reg.register_fn("drop", RUNTIME | STARTUP, false, |_, r| drop(r));
        reg.register_fn("panic", RUNTIME | STARTUP, false, |_, _| panic!("boom"));
        reg
    }

    #[test]
    fn dispatch_and_states() {
        let reg = registry();
        assert_eq!(call(&reg, "start", None).unwrap(), json!(true));
        let e = call(&reg, "run", None).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (-1, NOT_INITIALIZED_MESSAGE));
        reg.state().set_state(RUNTIME);
        assert_eq!(call(&reg, "run", None).unwrap(), json!("ran"));
        let e = call(&reg, "start", None).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (-1, ALREADY_INITIALIZED_MESSAGE)
        );
        let e = call(&reg, "nope", None).unwrap_err();
        assert_eq!(e.code, -32601);
        assert!(e.message.starts_with("Method not found"));
        let e = call(&reg, "fail", None).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (-19, "bdev 'x' not found"));
        assert_eq!(call(&reg, "drop", None).unwrap_err().code, -32603);
        assert_eq!(call(&reg, "panic", None).unwrap_err().code, -32603);
    }

    #[test]
    fn success_hook_only_for_mutating_successes() {
        let reg = registry();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        reg.on_success(move |m| s2.lock().unwrap().push(m.to_owned()));
        call(&reg, "start", None).unwrap();
        call(&reg, "fail", None).unwrap_err();
        call(&reg, "drop", None).unwrap_err();
        call(&reg, "rpc_get_methods", None).unwrap();
        reg.call("start", None, Responder::ignore());
        assert_eq!(*seen.lock().unwrap(), vec!["start", "start"]);
    }

    #[test]
    fn get_methods_and_aliases() {
        let reg = registry();
        reg.register_alias_deprecated("old_run", "run");
        let all = call(&reg, "rpc_get_methods", None).unwrap();
        assert_eq!(
            all,
            json!(["drop", "fail", "panic", "rpc_get_methods", "run", "start"])
        );
        let cur = call(&reg, "rpc_get_methods", Some(json!({"current": true}))).unwrap();
        assert_eq!(
            cur,
            json!(["drop", "fail", "panic", "rpc_get_methods", "start"])
        );
        let with = call(
            &reg,
            "rpc_get_methods",
            Some(json!({"include_aliases": true})),
        )
        .unwrap();
        assert!(with.as_array().unwrap().contains(&json!("old_run")));
        let e = call(&reg, "rpc_get_methods", Some(json!({"bogus": 1}))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (-32602, "unknown parameter 'bogus'")
        );
        reg.state().set_state(RUNTIME);
        assert_eq!(call(&reg, "old_run", None).unwrap(), json!("ran"));
        assert_eq!(reg.methods(true).len(), 5);
    }

    #[test]
    fn deferred_hook_holds_the_answer_until_released() {
        let reg = registry();
        let held: Arc<std::sync::Mutex<Vec<Release>>> = Arc::default();
        let h2 = held.clone();
        reg.on_success_deferred(move |m, release| {
            assert_eq!(m, "start");
            h2.lock().unwrap().push(release);
        });
        let (tx, rx) = mpsc::channel();
        reg.call("start", None, Responder::new(move |r| tx.send(r).unwrap()));
        assert!(rx.try_recv().is_err(), "held back");
        let release = held.lock().unwrap().pop().unwrap();
        release();
        assert_eq!(rx.try_recv().unwrap().unwrap(), json!(true));
        // Failures and non-mutating methods are not held.
        call(&reg, "fail", None).unwrap_err();
        call(&reg, "rpc_get_methods", None).unwrap();
        assert!(held.lock().unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_panics() {
        let reg = registry();
        reg.register_fn("run", RUNTIME, false, |_, r| r.ok(1));
    }

    #[test]
    fn async_answer_from_other_thread() {
        let reg = Registry::new(Arc::new(ServerState::new(RUNTIME)));
        let n = Arc::new(AtomicUsize::new(0));
        reg.register_fn("later", RUNTIME, false, |p, r| {
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                r.ok(p)
            });
        });
        assert_eq!(
            call(&reg, "later", Some(json!({"a":1}))).unwrap(),
            json!({"a":1})
        );
        n.fetch_add(1, Ordering::SeqCst);
    }
}
