//! The HTTP side of the pipeline: reading what servers say about authorization.

mod challenge;

pub use challenge::{
    Challenge, ChallengeError, ChallengeErrorCode, Challenges, SelectedChallenge, TokenType,
    UntrustedText,
};
