//! The webhook function's handler, testable without a Lambda runtime.
