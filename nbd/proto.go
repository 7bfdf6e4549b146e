package nbd

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// All integers on the wire are big-endian.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454F5054 // "IHAVEOPT"
	repMagic        = 0x0003e889045565a9 // option reply magic
	requestMagic    = 0x25609513
	simpleReplyMagc = 0x67446698

	// Handshake flags (server) and client flags.
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1

	// Options.
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructuredRepl = 8

	// Option reply types.
	repAck           = 1
	repServer        = 2
	repInfo          = 3
	repFlagError     = 1 << 31
	repErrUnsup      = repFlagError | 1
	repErrPolicy     = repFlagError | 2
	repErrInvalid    = repFlagError | 3
	repErrTLSReqd    = repFlagError | 5
	repErrUnknown    = repFlagError | 6
	repErrShutdown   = repFlagError | 7
	repErrBlockSizeR = repFlagError | 8
	repErrTooBig     = repFlagError | 9

	// NBD_OPT_INFO / NBD_OPT_GO information types.
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// Transmission flags.
	flagHasFlags        = 1 << 0
	flagReadOnly        = 1 << 1
	flagSendFlush       = 1 << 2
	flagSendFUA         = 1 << 3
	flagSendTrim        = 1 << 5
	flagSendWriteZeroes = 1 << 6
	flagCanMultiConn    = 1 << 8

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	// Command flags.
	cmdFlagFUA = 1 << 0

	// Error values in simple replies (Linux errno numbers, as the spec fixes them).
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Sizes of the fixed parts of messages.
const (
	requestSize = 28
	replySize   = 16
)
