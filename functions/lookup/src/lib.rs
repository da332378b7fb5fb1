//! The lookup function's handler, testable without a Lambda runtime.
