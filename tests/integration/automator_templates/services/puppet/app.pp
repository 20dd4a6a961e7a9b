# Facts from Loom: loom_cluster, loom_host, loom_ip, loom_service, loom_action, loom_home,
# loom_config and loom_nodes (JSON strings).
file { "${facts['loom_home']}/out":
  ensure => directory,
}
file { "${facts['loom_home']}/out/puppet-app.txt":
  ensure  => file,
  content => "host=${facts['loom_host']} cluster=${facts['loom_cluster']} action=${facts['loom_service']}.${facts['loom_action']}\nconfig=${facts['loom_config']}\n",
}
include loomtest
