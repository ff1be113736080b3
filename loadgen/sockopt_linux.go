package loadgen

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): a socket
// bound to a source address gets its port at connect, not at bind, so the
// port may be shared with sockets to other destinations and reused from
// TIME_WAIT (net.ipv4.tcp_tw_reuse). Without it, every run from
// --source-addrs would hold its ports for a minute after it ends, and two
// large runs in a row would find none free.
const ipBindAddressNoPort = 24

func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
