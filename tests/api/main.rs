//! Black-box tests: one binary (links once), one module per API family.

mod helpers;

mod accounts;
mod arc;
mod arc_mfa;
mod campaigns;
mod console;
mod convtools;
mod fynd_app;
mod fynd_oauth;
mod fynd_platform;
mod fynd_social;
mod integrations;
mod media;
mod merge;
mod messaging;
mod oidc;
mod ops;
mod realtime;
mod reliability_auth;
mod reliability_crash;
mod reliability_hostile;
mod reliability_isolation;
mod reliability_resume;
mod reliability_schema;
mod reliability_soak;
mod saml;
mod security_logins;
mod security_media;
mod security_ops;
mod security_takeover;
mod seed_shapes;
mod teams;
mod webhooks;
