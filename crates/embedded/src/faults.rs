//! The hook through which the embedded adapters meet AWS's failure modes when asked (DESIGN
//! §6). The adapters call [`FaultInjector::before`] ahead of each service call, as if the
//! service had answered; they react exactly as the AWS adapters react to the real answer
//! (in-process retries with backoff for throttling and conflicts). The seeded injector of
//! `pixpress run --faults` lives in the local runner crate.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::anyhow;
use pixpress_app::ports::PortError;

/// The kind of service call a fault may hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// A DynamoDB `TransactWriteItems` (request creation).
    Transaction,
    /// One of the two single-item writes recording a row outcome (the row's `UpdateItem`, its
    /// counter shard's `ADD`: [`pixpress_domain::counting`]).
    Outcome,
    /// A single-item DynamoDB write (`PutItem`, `UpdateItem`).
    Write,
    /// A DynamoDB read (`GetItem`, `Query`).
    Read,
    /// SQS `SendMessageBatch`.
    Enqueue,
    /// SQS `ReceiveMessage`.
    Receive,
    /// SQS `DeleteMessage`.
    Delete,
}

/// How an injected fault makes the call fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectedFault {
    /// Throttled (`ThrottlingException`, a transaction cancelled for `ThrottlingError`).
    Throttle,
    /// A transaction cancelled for `TransactionConflict` (transactions only).
    Conflict,
    /// The invocation making the call has died: the call never reaches the service.
    Crash,
}

impl InjectedFault {
    /// The port error the caller sees.
    #[must_use]
    pub fn into_error(self, call: Call) -> PortError {
        match self {
            Self::Throttle => PortError::Throttled(format!("{call:?}: injected throttling")),
            Self::Conflict => {
                PortError::Conflict(format!("{call:?}: injected TransactionConflict"))
            }
            Self::Crash => PortError::Unexpected(anyhow::anyhow!(
                "{call:?}: the invocation crashed (injected)"
            )),
        }
    }
}

/// Decides which service calls fail and how. Implementations must be cheap: they run before
/// every call of the embedded adapters.
pub trait FaultInjector: Send + Sync + Debug + 'static {
    /// `Some(fault)` makes the coming `call` fail that way.
    fn before(&self, call: Call) -> Option<InjectedFault>;

    /// `true` makes a received message be delivered once more (SQS standard queues deliver at
    /// least once; the copy may reach another consumer at the same time).
    fn duplicate_delivery(&self) -> bool;
}

/// The fault injector an embedded adapter meets before each call, if it was given one. Clones
/// share the injector.
#[derive(Debug, Clone, Default)]
pub struct Faults(Option<Arc<dyn FaultInjector>>);

impl Faults {
    /// Calls fail as `injector` decides.
    #[must_use]
    pub fn new(injector: Arc<dyn FaultInjector>) -> Self {
        Self(Some(injector))
    }

    /// Meets the injector before `call`.
    ///
    /// # Errors
    /// The [`PortError`] of the fault the injector chose for `call`, as the service would
    /// have answered.
    pub fn check(&self, call: Call) -> Result<(), PortError> {
        match self.0.as_ref().and_then(|f| f.before(call)) {
            Some(fault) => Err(fault.into_error(call)),
            None => Ok(()),
        }
    }

    /// `true` when the injector delivers the message being received once more.
    #[must_use]
    pub fn duplicate_delivery(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.duplicate_delivery())
    }
}

/// Locks the state of an embedded adapter (`what` names it).
///
/// # Errors
/// [`PortError::Unexpected`] when a thread panicked holding the lock.
pub(crate) fn lock<'a, T>(state: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>, PortError> {
    state
        .lock()
        .map_err(|_| PortError::Unexpected(anyhow!("{what} lock poisoned")))
}
