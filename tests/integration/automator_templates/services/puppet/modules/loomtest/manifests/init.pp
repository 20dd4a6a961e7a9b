class loomtest {
  file { "${facts['loom_home']}/out/puppet-module.txt":
    ensure  => file,
    content => "module loomtest on ${facts['loom_host']}\n",
  }
}
