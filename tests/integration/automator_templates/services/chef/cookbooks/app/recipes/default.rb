directory "#{ENV['HOME']}/out"
file "#{ENV['HOME']}/out/chef-app.txt" do
  content "peers=#{node['app']['peers']} host=#{node['loom']['host']}\n"
end
