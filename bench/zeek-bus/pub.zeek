# Publishes BENCH_COUNT NetControl::catch_release_encountered(addr) events on
# zeek.cluster.manager, BENCH_RATE per second (0: as fast as it can), once a subscriber is
# there (unpaced, 1000 per turn of Zeek's loop); prints how long it took.
@load ./common

module Bench;

global total = to_count(getenv("BENCH_COUNT"));
global rate = to_count(getenv("BENCH_RATE"));
global batch = rate / 1000 > 0 ? rate / 1000 : 1;
global sent = 0;
global started: time;
global tick: event();
global stop: event();

event tick()
	{
	# Send what the rate allows by now (Zeek's timers fire a little late, so a fixed batch
	# per tick would fall behind).
	local due = rate == 0 ? sent + 1000
	                      : double_to_count(interval_to_double(current_time() - started) * rate) + batch;
	if ( due > total )
		due = total;
	while ( sent < due )
		{
		local a = count_to_v4_addr(167772160 + sent % 65536);
		Cluster::publish("zeek.cluster.manager", NetControl::catch_release_encountered, a);
		++sent;
		}
	if ( sent < total )
		schedule (rate == 0 ? 0usec : 1msec) { tick() };
	else
		{
		print fmt("sent %d in %.3f s", sent, interval_to_double(current_time() - started));
		schedule 1sec { Bench::stop() };
		}
	}

event stop()
	{
	terminate();
	}

# Start once the subscriber's subscription has reached this node (as bus_flood does).
event Cluster::Backend::ZeroMQ::subscription(topic: string)
	{
	if ( topic == "zeek.cluster.manager" && sent == 0 )
		{
		started = current_time();
		event tick();
		}
	}
