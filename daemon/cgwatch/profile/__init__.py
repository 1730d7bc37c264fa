"""CPU profiles per container: sampled in the kernel (perf event, cpu-clock),
symbolised in user space, stored under the state directory and attached to alerts."""
