# atpred on RPM systems: user, directories and unit presets; not started on a fresh install
# (the configuration must be set up first); a running daemon is restarted on upgrade.
systemd-sysusers /usr/lib/sysusers.d/atpred.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/atpred.conf
chown root:atpre /etc/atpre/atpred.toml
chmod 0640 /etc/atpre/atpred.toml
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 2 ]; then
    systemctl try-restart atpred.service >/dev/null 2>&1 || :
else
    systemctl enable atpred.socket atpred.service >/dev/null 2>&1 || :
fi
