//! The seed's Register stage: what makes an instance findable once it runs. This build records
//! endpoints; DNS, monitoring targets and backup schedules arrive with their issue.

mod endpoints;

pub use endpoints::RegisterEndpoints;
