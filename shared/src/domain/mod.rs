//! The masking domain: pure values and rules, nothing of AWS.

mod call;
pub mod invariant;
mod number;
mod phone;
mod pin;
mod session;

pub use call::{
    AnswerTally, CallEnd, CallId, CallIdError, Channel, ConnectedCall, DialStatus, DialStatusError,
    Recording, RecordingError, RecordingReady,
};
pub use number::{
    Capabilities, Capability, Hold, HoldNote, HoldReason, NumberError, NumberState, PoolNumber,
    Provider,
};
pub use phone::{Market, PhoneError, RealNumber, VirtualNumber, E164};
pub use pin::{ContactPins, Pin, PinError, PinKey, PinRoute, PIN_DIGITS};
pub use session::{
    now, validate_participants, Contact, ContactPolicy, Direction, Handover, OrderId, Participant,
    Role, Route, RouteKey, RoutePair, Session, SessionError, SessionState, UnixTime, UserId,
    MAX_ALTERNATES, MAX_ORDER_PHONES, MAX_PARTICIPANTS,
};
