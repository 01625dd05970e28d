// A plain fork-mode web app: the options most files carry.
module.exports = {
  apps: [
    {
      name: 'web',
      script: 'server.js',
      args: '--port 3000 --name "my web"',
      node_args: ['--max-old-space-size=256'],
      env: { NODE_ENV: 'development', PORT: 3000, FEATURE_FLAGS: { beta: true } },
      max_memory_restart: '200M',
      min_uptime: '2s',
      max_restarts: 10,
      kill_timeout: 3000,
      restart_delay: 100,
      exp_backoff_restart_delay: 100,
      autorestart: true,
      log_date_format: 'YYYY-MM-DD HH:mm Z',
      merge_logs: true,
    },
  ],
};
