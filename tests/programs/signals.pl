#!/usr/bin/perl
# The `perl-signals` workload of run-program.sh: a program with its own
# signal handlers doing real work under them.
#
#   SIGALRM  Time::HiRes::ualarm every 10 ms; the handler allocates (a
#            string, an array, a hash) and logs a digest of what it built.
#   SIGCHLD  reaps the children (waitpid WNOHANG in a loop), records their
#            exit codes in a hash.
#   SIGUSR1  sent by every child before it exits; appends to a list.
#
# Meanwhile the main program builds and rewrites a large hash, sorts it,
# and forks children that compute a digest and exit with part of it.
#
# Perl dispatches its handlers between ops ("safe signals"): the C handler
# records the signal, the Perl handler runs soon after, so every handler
# allocates in the middle of the main program's allocations.
#
# Only deterministic facts are printed: how many ticks and signals arrived
# depends on timing, so the output says only that they did (at least a
# minimum), and that everything the handlers built checks out.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(ualarm);

$| = 1;
my $ticks = 0;
my @alarm_log;
my %reaped;
my @usr1;

sub tick_string { my ($t) = @_; return join(",", map { $_ * $t } 1 .. 40) }

$SIG{ALRM} = sub {
	$ticks++;
	my $s = tick_string($ticks);
	my %h = map { ("k$_" => ("v$_" x 3)) } 1 .. 16;
	my @a = (reverse(split(/,/, $s)), keys %h);
	push @alarm_log, [ $ticks, md5_hex($s), scalar(@a), scalar(keys %h) ];
};
$SIG{CHLD} = sub {
	local ($!, $?);
	while ((my $pid = waitpid(-1, WNOHANG)) > 0) {
		$reaped{$pid} = $? >> 8;
	}
};
$SIG{USR1} = sub { push @usr1, "usr1 " . scalar(@usr1) };

ualarm(10000, 10000);

# Work 1: a large hash, built, rewritten, deleted from, sorted.
my %big;
my $x = 20240601;
for my $i (1 .. 150000) {
	$x = ($x * 16807) % 2147483647;
	$big{"key$x"} = [ $i, "val" x ($x % 7), { n => $x % 1000 } ];
}
for my $k (keys %big) {
	my $v = $big{$k};
	if ($v->[0] % 3 == 0) { delete $big{$k}; next }
	$v->[1] = join("-", reverse split(//, $v->[1]));
	$v->[2]{m} = $v->[2]{n} * 2;
}
my $digest = Digest::MD5->new;
for my $k (sort keys %big) {
	my $v = $big{$k};
	$digest->add("$k=$v->[0]:$v->[1]:$v->[2]{n}:$v->[2]{m}\n");
}
print "hash: ", scalar(keys %big), " keys, md5 ", $digest->hexdigest, "\n";

# Work 2: children in waves of 8, reaped by the SIGCHLD handler while the
# main program builds a word list between the waves.
my $parent = $$;
my %child;
my @words;
for my $wave (0 .. 4) {
	for my $c ($wave * 8 + 1 .. $wave * 8 + 8) {
		my $pid = fork() // die "fork: $!";
		if ($pid == 0) {
			$SIG{ALRM} = 'DEFAULT';
			my %h;
			$h{$_ * $c} = "x" x ($_ % 50) for 1 .. 20000;
			my $d = md5_hex(join(",", map { "$_=$h{$_}" } sort { $a <=> $b } keys %h));
			kill 'USR1', $parent;
			POSIX::_exit(hex(substr($d, 0, 2)) % 100);
		}
		$child{$pid} = $c;
	}
	for my $i (1 .. 20000) {
		$x = ($x * 16807) % 2147483647;
		push @words, join("", map { chr(97 + ($x >> $_) % 26) } 0 .. ($x % 9));
	}
}
# Wait for the handler to reap every child (sleeping is interrupted by the
# ticks; the deadline is generous).
my $deadline = time + 60;
while (grep({ !exists $reaped{$_} } keys %child) && time < $deadline) {
	select(undef, undef, undef, 0.01);
}
# Work 3: the words sorted and joined.
my @sorted = sort @words;
print "words: ", scalar(@sorted), ", md5 ", md5_hex(join("\n", @sorted)), "\n";
# Keep ticking a little while longer with nothing else to do.
my $until = $ticks + 50;
$deadline = time + 20;
while ($ticks < $until && time < $deadline) {
	select(undef, undef, undef, 0.001);
}
ualarm(0);

my $missing = grep { !exists $reaped{$_} } keys %child;
my %codes;
$codes{ $child{$_} } = $reaped{$_} for grep { exists $reaped{$_} } keys %child;
print "children reaped by the SIGCHLD handler: ", scalar(keys %child) - $missing,
  " of ", scalar(keys %child), "\n";
print "child exit codes: ", join(",", map { $codes{$_} // "?" } sort { $a <=> $b } keys %codes),
  "\n";

my $ok = 1;
for my $e (@alarm_log) {
	my ($t, $m, $n, $k) = @$e;
	$ok = 0 unless md5_hex(tick_string($t)) eq $m && $n == 56 && $k == 16;
}
print "SIGALRM handler ran at least 50 times: ", ($ticks >= 50 ? "yes" : "no ($ticks)"), "\n";
print "SIGALRM handler's allocations check out: ", ($ok ? "yes" : "no"), "\n";
print "SIGUSR1 handler ran: ", (@usr1 >= 1 ? "yes" : "no"), "\n";
my $usr1_ok = !grep { $usr1[$_] ne "usr1 $_" } 0 .. $#usr1;
print "SIGUSR1 log in order: ", ($usr1_ok ? "yes" : "no"), "\n";
