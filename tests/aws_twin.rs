//! The EC2 twin end to end (written in a later commit).
