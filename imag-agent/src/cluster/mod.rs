//! Interface stub (replaced by the real cluster adapter at merge).
use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Here,
    Node { name: String, address: Ipv4Addr },
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    Target { host: String, target: Target },
    Fence,
    Unfence,
}
pub enum Claim {
    Won,
    Lost { node: String, address: Ipv4Addr },
    Unavailable(String),
}
#[derive(Clone)]
pub struct ClusterHandle;
impl ClusterHandle {
    pub async fn claim(&self, _host: &str) -> Claim {
        Claim::Won
    }
    pub async fn release(&self, _host: &str) {}
    pub fn view(&self) -> crate::report::ClusterView {
        crate::report::ClusterView::default()
    }
}
