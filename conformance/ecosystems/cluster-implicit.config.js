// A node app that sets instances but no exec_mode: PM2 7 runs it in cluster mode.
module.exports = {
  apps: [
    {
      name: 'api',
      script: './api/index.js',
      instances: 2,
      instance_var: 'INSTANCE_ID',
      increment_var: 'PORT',
      env: { PORT: 4100 },
      wait_ready: true,
      listen_timeout: 5000,
      shutdown_with_message: false,
      source_map_support: false,
      time: true,
    },
    {
      name: 'api-max',
      script: 'api/index.js',
      instances: 'max',
      exec_mode: 'cluster_mode',
    },
  ],
};
