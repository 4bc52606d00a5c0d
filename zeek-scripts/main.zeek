##! catchd as a NetControl backend: the options of the plugin and the events
##! catchd adds to NetControl's broker-plugin contract.
##!
##! The plugin (see plugin.zeek) sends NetControl rules to catchd with
##! ``Cluster::publish`` on :zeek:see:`Catchd::topic`, so it works with the
##! ZeroMQ cluster backend. catchd answers with Zeek's own broker-plugin events
##! (``NetControl::broker_rule_added`` and the others), which the base NetControl
##! framework turns into ``rule_added``, ``rule_exists``, ``rule_removed``,
##! ``rule_error`` and ``rule_timeout``.

@load base/frameworks/cluster
@load base/frameworks/netcontrol

module Catchd;

export {
	## The topic rules go out on and answers come back on. It must be
	## catchd's ``bus.netcontrol_topic`` (default ``catchd.netcontrol``).
	const topic = "catchd.netcontrol" &redef;

	## The plugin's NetControl priority. Plugins are tried in descending
	## priority; after one accepts a rule, only plugins of the same priority
	## also get it.
	const priority = 0 &redef;

	## Rule types sent to catchd. catchd enforces DROP; any other type is
	## answered with an error, so NetControl can try another plugin.
	const rule_types: set[NetControl::RuleType] = { NetControl::DROP } &redef;

	## Entity types sent to catchd. catchd blocks addresses and networks.
	const entity_types: set[NetControl::EntityType] = { NetControl::ADDRESS } &redef;

	## Send rules whose target is the forward path.
	const forward = T &redef;

	## Send rules whose target is the monitor path.
	const monitor = T &redef;

	## Activate the plugin in ``NetControl::init`` on a standalone node or on
	## the cluster manager. Set it to F to call ``NetControl::activate`` with
	## :zeek:see:`Catchd::create_plugin` yourself.
	const auto_activate = T &redef;

	## How often the plugin asks for catchd until catchd answers. Rules added
	## before that fail with "plugins not initialized yet", as with Zeek's
	## broker plugin before its peer is up.
	const hello_interval = 1sec &redef;

	## Creates a catchd plugin for topic ``t``. catchd expires blocks itself
	## (``can_expire`` is T): it sends ``broker_rule_timeout`` when a block ends.
	global create_plugin: function(t: string &default=topic): NetControl::PluginState;

	## Sent by the plugin until catchd answers (``id`` is the plugin's
	## ``broker_id``).
	global netcontrol_hello: event(id: count);

	## catchd's answer to :zeek:see:`Catchd::netcontrol_hello`; the plugin
	## activates.
	global netcontrol_ready: event(id: count);

	## The events catchd's own nodes exchange (a catchd sensor and its
	## manager). Zeek never raises them; they are declared so that a Zeek
	## node hosting the WebSocket API (``Cluster::listen_websocket``) accepts
	## them from a catchd that joins through it, and passes them on.

	## A catchd sensor asks the managers for the watched set.
	global sync_request: event(node: string);

	## A full snapshot of ``n`` ``catch_release_block_new`` events follows.
	global sync_begin: event(n: count);

	## The snapshot is complete.
	global sync_end: event(n: count);

	## A catchd manager (re)started; its sensors ask for the watched set.
	global manager_up: event(node: string);

}
