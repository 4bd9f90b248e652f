//! The kernel side of the cluster (rtnetlink): the announcements in imag's own table (a host's
//! `/32` on the bridge with the metric of `decide.rs`, which the operator's BGP daemon exports)
//! and the main-table `/32`s that send a host's packets to the node serving it. Every route
//! carries protocol [`PROTOCOL`], which is how a restarted agent finds and flushes its own.

use std::net::Ipv4Addr;

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    },
};

/// `proto 201` (`imag` in `/etc/iproute2/rt_protos.d` if the operator names it).
pub const PROTOCOL: u8 = 201;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink socket ({0}): the agent needs CAP_NET_ADMIN")]
    Socket(std::io::Error),
    #[error("{what} failed: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error(
        "no route reaches node {node} at {address}: add a route to it (ip route get {address} \
         must answer) or fix its [cluster] address"
    )]
    Unreachable { node: String, address: Ipv4Addr },
}

/// How to reach a node: the gateway (if any) and the output device, as `ip route get` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
}

/// imag's routes in one network namespace.
#[derive(Clone)]
pub struct Routes {
    handle: Handle,
    table: u32,
    bridge: u32,
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |source| RouteError::Netlink { what, source }
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or_else(|| u32::from(route.header.table))
}

fn destination_of(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(addr)) => Some(*addr),
        _ => None,
    })
}

impl Routes {
    /// Opens a netlink connection (in the calling thread's network namespace) and spawns its
    /// driver; `bridge` is the interface index the announcements point at.
    pub fn open(table: u32, bridge: u32) -> Result<Routes, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(connection);
        Ok(Routes {
            handle,
            table,
            bridge,
        })
    }

    /// Every IPv4 route of ours (protocol [`PROTOCOL`]) in `table`.
    async fn ours(&self, table: u32) -> Result<Vec<RouteMessage>, RouteError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let all: Vec<RouteMessage> = (self.handle.route().get(request).execute())
            .try_collect()
            .await
            .map_err(netlink("listing routes"))?;
        Ok(all
            .into_iter()
            .filter(|r| r.header.protocol == RouteProtocol::from(PROTOCOL) && table_of(r) == table)
            .collect())
    }

    async fn delete_all(&self, routes: Vec<RouteMessage>) -> usize {
        let mut deleted = 0;
        for route in routes {
            let what = format!("deleting the route to {:?}", destination_of(&route));
            match self.handle.route().del(route).execute().await {
                Ok(()) => deleted += 1,
                Err(err) => tracing::warn!(error = %netlink(what)(err), "route left behind"),
            }
        }
        deleted
    }

    /// Removes every route of ours from imag's table and from main (start and clean exit).
    pub async fn flush(&self) -> Result<usize, RouteError> {
        let mut routes = self.ours(self.table).await?;
        routes.extend(self.ours(u32::from(RouteHeader::RT_TABLE_MAIN)).await?);
        Ok(self.delete_all(routes).await)
    }

    /// Removes every announcement (fencing, exit); the main-table routes stay.
    pub async fn withdraw_all(&self) -> Result<usize, RouteError> {
        let routes = self.ours(self.table).await?;
        Ok(self.delete_all(routes).await)
    }

    /// Deletes every route of ours to `addr/32` in `table`, whatever its metric and next hop
    /// (scope "nowhere" and no priority match any), without listing the table.
    async fn delete_to(&self, table: u32, addr: Ipv4Addr) -> Result<(), RouteError> {
        // A prefix has one route of ours per metric at most; a few rounds clear any leftover.
        for _ in 0..4 {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(addr, 32)
                .scope(RouteScope::NoWhere)
                .protocol(RouteProtocol::from(PROTOCOL))
                .table_id(table)
                .build();
            match self.handle.route().del(route).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::ESRCH || e.raw_code() == -libc::ENOENT =>
                {
                    return Ok(());
                }
                Err(err) => {
                    return Err(netlink(format!(
                        "deleting the route to {addr}/32 in table {table}"
                    ))(err));
                }
            }
        }
        Ok(())
    }

    /// Announces `addr/32 dev <bridge> scope link proto 201 table <table> metric <metric>`,
    /// replacing any announcement of ours for it (a route with another metric is another route
    /// to IPv4, so the old one is deleted first).
    pub async fn announce(&self, addr: Ipv4Addr, metric: u32) -> Result<(), RouteError> {
        self.withdraw(addr).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(self.bridge)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(PROTOCOL))
            .table_id(self.table)
            .priority(metric)
            .build();
        (self.handle.route().add(route).execute())
            .await
            .map_err(netlink(format!(
                "announcing {addr}/32 in table {} with metric {metric}",
                self.table
            )))
    }

    /// Removes this node's announcement of `addr`, if any.
    pub async fn withdraw(&self, addr: Ipv4Addr) -> Result<(), RouteError> {
        self.delete_to(self.table, addr).await
    }

    /// How the kernel reaches `address` now (`ip route get`: an `RTM_GETROUTE` request for one
    /// destination, which the kernel answers with the route it would use).
    pub async fn next_hop(&self, node: &str, address: Ipv4Addr) -> Result<NextHop, RouteError> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(address, 32)
            .build();
        let unreachable = || RouteError::Unreachable {
            node: node.to_string(),
            address,
        };
        let answer: Vec<RouteMessage> = match self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
        {
            Ok(answer) => answer,
            Err(_) => return Err(unreachable()),
        };
        let route = answer.into_iter().next().ok_or_else(unreachable)?;
        let mut hop = NextHop {
            gateway: None,
            oif: 0,
        };
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => hop.gateway = Some(*gw),
                RouteAttribute::Oif(oif) => hop.oif = *oif,
                _ => {}
            }
        }
        if hop.oif == 0 {
            return Err(unreachable());
        }
        Ok(hop)
    }

    /// Sends `addr/32` to node `node` at `address`: in the main table, via the next hop that
    /// reaches the node (its gateway, or the node itself on-link), replacing ours if any.
    pub async fn route_to(
        &self,
        addr: Ipv4Addr,
        node: &str,
        address: Ipv4Addr,
    ) -> Result<NextHop, RouteError> {
        let hop = self.next_hop(node, address).await?;
        self.unroute(addr).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .gateway(hop.gateway.unwrap_or(address))
            .output_interface(hop.oif)
            .protocol(RouteProtocol::from(PROTOCOL))
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .build();
        (self.handle.route().add(route).execute())
            .await
            .map_err(netlink(format!(
                "routing {addr}/32 to node {node} at {address}"
            )))?;
        Ok(hop)
    }

    /// Removes the main-table route of ours to `addr`, if any.
    pub async fn unroute(&self, addr: Ipv4Addr) -> Result<(), RouteError> {
        self.delete_to(u32::from(RouteHeader::RT_TABLE_MAIN), addr)
            .await
    }
}
