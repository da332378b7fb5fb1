//! The assign function's handler, testable without a Lambda runtime.
