exec { 'loom-puppet-boom':
  command => '/bin/false',
}
