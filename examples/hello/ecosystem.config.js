// A regular PM2 ecosystem file: Ferry's publish reads it through node exactly as `pm2 start` would, checks server.js in
// the artifact, and drops the options Ferry owns on the instance (namespace, log and pid paths, watch) with a warning.
module.exports = {
  apps: [
    {
      name: 'hello',
      script: 'server.js',
      instances: 1,
      exec_mode: 'fork',
      max_memory_restart: '200M',
      env: { NODE_ENV: 'development' },
      env_production: { NODE_ENV: 'production' },
    },
  ],
};
