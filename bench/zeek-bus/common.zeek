# Shared by pub.zeek and sub.zeek: a standalone Zeek node on the ZeroMQ backend, joining
# the proxy given in the environment (BUS_XPUB, BUS_XSUB: the proxy's endpoints), and
# the event both sides use, declared as catch-and-release declares it.
@load frameworks/cluster/backend/zeromq
redef Cluster::backend = Cluster::CLUSTER_BACKEND_ZEROMQ;
redef Cluster::Backend::ZeroMQ::run_proxy_thread = F;
redef Cluster::Backend::ZeroMQ::connect_xpub_endpoint = getenv("BUS_XSUB");
redef Cluster::Backend::ZeroMQ::connect_xsub_endpoint = getenv("BUS_XPUB");
redef exit_only_after_terminate = T;
# Every event carries its send time (network time, which without a packet source is the
# wall clock), as catchd's bench/bus_flood.rs stamps its own.
redef EventMetadata::add_network_timestamp = T;

module NetControl;
export {
	global catch_release_encountered: event(a: addr);
}
