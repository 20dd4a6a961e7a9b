log "app listens on #{node['app']['port']}"
