//! The pool-refresh function's handler, testable without a Lambda runtime.
