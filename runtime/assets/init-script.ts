/**
 * The initramfs's /init, run by busybox's sh. The kernel hands it the words after `--` on
 * its command line as arguments: with any, it runs them as one shell command and powers off;
 * with none it gives a shell on the console and powers off when that shell ends.
 * Every line it prints starts with INIT_MARKER so tests and the boot benchmark can find them.
 */
export const INIT_MARKER = "workervisor-init:";
export const INIT_STARTED_LINE = `${INIT_MARKER} started`;

export function initScript(): string {
  return `#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "${INIT_STARTED_LINE}"
while read -r module; do
  insmod "/lib/modules/$module.ko" || echo "${INIT_MARKER} insmod $module failed"
done < /etc/modules.order
echo "${INIT_MARKER} nproc=$(nproc)"
if [ $# -gt 0 ]; then
  sh -c "$*"
  echo "${INIT_MARKER} command exited $?"
else
  setsid cttyhack sh
fi
echo "${INIT_MARKER} powering off"
poweroff -f
`;
}
