//! Provider wire formats. Each submodule speaks one upstream protocol; the handlers pick one by
//! the resolved provider's type.

pub mod anthropic;
pub mod azure;
pub mod mock;
pub mod openai;
pub mod responses;
