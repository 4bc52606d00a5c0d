##! The catchd NetControl plugin, modelled on Zeek's broker plugin but
##! publishing with ``Cluster::publish`` (ZeroMQ backend) instead of
##! ``Broker::publish``. It reuses the broker plugin's events and its
##! ``broker_id`` table, so catchd's answers go through the base framework's
##! handlers unchanged.

@load base/frameworks/netcontrol/plugins/broker
@load ./main

module NetControl;

export {
	redef record PluginState += {
		## The topic of a catchd plugin.
		catchd_topic: string &optional;
	};
}

## Plugins waiting for catchd's netcontrol_ready, by broker_id.
global catchd_waiting: table[count] of PluginState = table();

## Repeats the hello until catchd answers.
global catchd_hello_tick: event(id: count);

function catchd_name(p: PluginState): string
	{
	return fmt("Catchd-%s", p$catchd_topic);
	}

function catchd_wants(r: Rule): bool
	{
	if ( r$ty !in Catchd::rule_types )
		return F;

	if ( r$entity$ty !in Catchd::entity_types )
		return F;

	if ( r$target == FORWARD && Catchd::forward )
		return T;

	if ( r$target == MONITOR && Catchd::monitor )
		return T;

	return F;
	}

function catchd_add_rule(p: PluginState, r: Rule): bool
	{
	if ( ! catchd_wants(r) )
		return F;

	Cluster::publish(p$catchd_topic, NetControl::broker_add_rule, p$broker_id, r);
	return T;
	}

function catchd_remove_rule(p: PluginState, r: Rule, reason: string): bool
	{
	if ( ! catchd_wants(r) )
		return F;

	Cluster::publish(p$catchd_topic, NetControl::broker_remove_rule, p$broker_id, r, reason);
	return T;
	}

event catchd_hello_tick(id: count)
	{
	if ( id !in catchd_waiting )
		return;

	Cluster::publish(catchd_waiting[id]$catchd_topic, Catchd::netcontrol_hello, id);
	schedule Catchd::hello_interval { catchd_hello_tick(id) };
	}

function catchd_init(p: PluginState)
	{
	Cluster::subscribe(p$catchd_topic);
	catchd_waiting[p$broker_id] = p;
	event catchd_hello_tick(p$broker_id);
	}

event Catchd::netcontrol_ready(id: count)
	{
	if ( id !in catchd_waiting )
		return;

	local p = catchd_waiting[id];
	delete catchd_waiting[id];
	plugin_activated(p);
	}

global catchd_plugin = Plugin(
	$name=catchd_name,
	$can_expire=T,
	$add_rule=catchd_add_rule,
	$remove_rule=catchd_remove_rule,
	$init=catchd_init
	);

function Catchd::create_plugin(t: string): PluginState
	{
	local p = PluginState($plugin=catchd_plugin,
	                      $broker_id=netcontrol_broker_current_id,
	                      $catchd_topic=t);
	netcontrol_broker_id[netcontrol_broker_current_id] = p;
	++netcontrol_broker_current_id;
	return p;
	}

@if ( ! Cluster::is_enabled() || Cluster::local_node_type() == Cluster::MANAGER )
event NetControl::init()
	{
	if ( Catchd::auto_activate )
		NetControl::activate(Catchd::create_plugin(), Catchd::priority);
	}
@endif
