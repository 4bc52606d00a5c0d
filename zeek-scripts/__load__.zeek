@load ./main
@load ./plugin
