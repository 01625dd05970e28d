// A regular PM2 ecosystem file: Ferry's publish reads it through node, keeps PM2's option names, and drops the
// options Ferry owns on the instance (cwd, namespace, log paths) with a warning.
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
