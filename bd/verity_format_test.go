package bd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// verityGolden are tree files frozen from the first implementation (which
// held the whole tree in memory): the SHA-256 of the whole tree file and
// the root, for data = pattern(blocks*bs, seed). Every cache geometry must
// write exactly these bytes (docs/format/bd.md, tree version 1).
var verityGolden = []struct {
	blocks, bs int
	seed       uint64
	treeSHA256 string
	root       string
	// after goldenWrites, then Sync
	writtenSHA256 string
	writtenRoot   string
}{
	{1, 512, 70, "870fb7f5ece2893e180529ae579a9666e6eb35dba75aa997daed365fbb44a1aa", "eed4b472ca6a661b50cf6550cf6875baa447bfaa2003ca837ea09d8a429e6daa", "29b855789c71d768d863d2416187f4f060a0594358153557d45b0c6a22b5b4f2", "f3cfcfccc099fe809269ae423444f5b78954e93d63d99b646567e302029aabe7"},
	{2, 512, 71, "f2784ca8c061967fcdf75eda83700d89fd592cb0452a08531331ee48fddbfa2c", "bb1ce3a5fbdf1da7eac1ba0fd86e25fbd180bce978c4002a473705cd3143df00", "a76b4487b939e4213867b6683e64bada7bfc863a0b7d93dfde12d484980ff4f5", "052235ef55e8463d48115ea7e614a2fb974dffbbd2ca9842e799f83955ebdec8"},
	{37, 512, 72, "d88b00a6bdd124260c423d80ae25feb2d665eebfe2d076c5293541b0c6e925a4", "1925a32c039b1d6b74113a9699b3cfa32c106f78b0a6032013c128fedf6e7629", "fa5d0bd11aa3d3af7ea9a64fa02c2c131d6b6cd8c19500b15431b2b4396f9f10", "45775f0044e7f726f66c35338720d09bbcf269927a6c5b1c0bfe0238769c66cb"},
	{37, 4096, 73, "520e060d97a7ff773230fe6dc3b3634b1cb0b657155cecf7c34e80f5f21656a0", "723fda8269b343f7cb02a2b277bdbab7e198fbb5ce7278f4b0541b361e5f3df7", "31bf7df7a61ff6da7f705d9f7af088d107fbfdf444a92fce08a331d59cd65403", "3db4e6592c709072bd55b521934ea86e7c8263cb94d63b512f2351a2c6c5626b"},
	{1000, 512, 74, "967f243c75b123b9d1e1f52b8e76e0a78f11a53827ca4251d0605f316bfcf130", "898a9b01ce5344d46d89f43963a2b62a92f3241f14cc0aeabcb07056be6088f5", "2176f225c14a79c5ded49ce1341fb62642977d829ecc483d24e558b91f48f8fd", "44130ed237f229fde26a237a928ccaf633585bffd37036996eaa4d46eb3e7423"},
	{1024, 4096, 75, "583394ead3a9dfa8bb2a7b002fa90baaf92441c9f4a11d1209c6626bdd727deb", "f768821f2dc97bd70f94050b3a97c70514616c811490e163271d4966932ccffb", "9dfbecf7052c9daed6738b4b6cc3f17f95495541f0aa9a6440881c6913b7c93f", "3d705b3e9e57c71ffe1831ead37ead4a1aa551f61c75f85e331491b5dfd0b729"},
	{4097, 512, 76, "f8619cbc0e318fee7d1e83a3114489d81902e7305ad8a4ac25b762be9d76bf92", "cf0492b18065b9f18f239046b50533845de72656c6e62d3e1e6a5a6244a4287a", "cc3e9c808fb02342dc76d22157a2b494e2dde26a8786962dc0e7145ec5b9ca99", "d4c738aabda308fcca7006e8427ed7775758bbcd0958128398b3a415cc28d1ce"},
}

func TestVerityGoldenTree(t *testing.T) {
	for _, g := range verityGolden {
		t.Run(name(g.blocks, "x", g.bs), func(t *testing.T) {
			checkGolden(t, g.blocks, g.bs, g.seed, 0, g.treeSHA256, g.root, g.writtenSHA256, g.writtenRoot)
		})
	}
}

// checkGolden formats pattern(blocks*bs, seed) with the tree cache size
// cache, compares the tree file and root with the golden ones, makes
// goldenWrites and compares again, and reopens with the new root.
func checkGolden(t *testing.T, blocks, bs int, seed uint64, cache int64, treeSHA256, root, writtenSHA256, writtenRoot string) {
	t.Helper()
	data := blockdev.NewMemoryFrom(pattern(blocks*bs, seed), 512)
	tree := newTree(t, data.Size(), bs)
	o := &VerityOptions{BlockSize: bs, TreeCache: cache}
	v, err := FormatVerity(context.Background(), data, tree, testMACKey, o)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tree.Bytes())
	if got := hex.EncodeToString(sum[:]); got != treeSHA256 {
		t.Errorf("tree file SHA-256 = %s; want %s", got, treeSHA256)
	}
	if got := hex.EncodeToString(v.Root()); got != root {
		t.Errorf("root = %s; want %s", got, root)
	}
	if v, err = OpenVerity(data, tree, testMACKey, v.Root(), o); err != nil {
		t.Fatalf("open: %v", err)
	}
	model := bytes.Clone(data.Bytes())
	for i, w := range goldenWrites(blocks) {
		p := pattern(w[1]*bs, uint64(200+i))
		if _, err := v.WriteAt(p, int64(w[0]*bs)); err != nil {
			t.Fatal(err)
		}
		copy(model[w[0]*bs:], p)
	}
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256(tree.Bytes())
	if got := hex.EncodeToString(sum[:]); got != writtenSHA256 {
		t.Errorf("after writes: tree file SHA-256 = %s; want %s", got, writtenSHA256)
	}
	if got := hex.EncodeToString(v.Root()); got != writtenRoot {
		t.Errorf("after writes: root = %s; want %s", got, writtenRoot)
	}
	d, err := OpenVerity(data, tree, testMACKey, v.Root(), o)
	if err != nil {
		t.Fatalf("reopen after writes: %v", err)
	}
	checkContents(t, d, model)
	if r, err := d.Check(context.Background(), nil); err != nil {
		t.Errorf("Check = %+v, %v", r, err)
	}
}

// goldenWrites are the writes {first block, blocks} made to a device of n
// blocks for the written goldens: the first block, the last, and a run in
// the middle.
func goldenWrites(n int) [][2]int {
	w := [][2]int{{0, 1}, {n - 1, 1}}
	if n >= 8 {
		w = append(w, [2]int{n/2 - 2, 5})
	}
	return w
}
